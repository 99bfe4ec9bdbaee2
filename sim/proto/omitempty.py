"""Lists the scalar fields that Go leaves out of JSON when they hold their zero value and that
protobuf cannot tell from absent: fields of a non-pointer Go type (string, number, bool) whose
json tag says `omitempty`. Go's protobuf code always writes such fields, so a decoded zero is
"not set" for them, while a zero in a pointer field (`replicas: 0`) is a value to keep.

Usage: python3 omitempty.py MODCACHE/k8s.io > omitempty.txt (from the modules of README.md)."""
import os
import re
import sys

MODULES = sys.argv[1]
VERSION = "v0.37.2"
PROTO_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "k8s.io")
FIELD = re.compile(
    r'^\s+\w+\s+(?P<type>[\w.\[\]*]+)\s+`json:"(?P<json>[^"]*)"\s+protobuf:"(?P<wire>\w+),'
)
STRUCT = re.compile(r"^type (\w+) struct \{")
NAMED = re.compile(r"^type (\w+) (?:string|bool|int32|int64)\s*$", re.M)


def named_scalars(go_dir):
    """Types declared as `type Protocol string` (or a number or bool) in the package."""
    names = set()
    for name in os.listdir(go_dir):
        if name.endswith(".go") and not name.endswith("_test.go"):
            with open(os.path.join(go_dir, name)) as f:
                names.update(NAMED.findall(f.read()))
    return names


def fields_of(go_dir, package):
    scalars = {"string", "bool", "int32", "int64"} | named_scalars(go_dir)
    for name in sorted(os.listdir(go_dir)):
        if not name.endswith(".go") or name.endswith("_test.go") or "generated" in name:
            continue
        struct = None
        with open(os.path.join(go_dir, name)) as f:
            for line in f:
                m = STRUCT.match(line)
                if m:
                    struct = m.group(1)
                    continue
                if line.startswith("}"):
                    struct = None
                    continue
                m = FIELD.match(line)
                if not struct or not m:
                    continue
                go_type, (json_name, *options) = m.group("type"), m.group("json").split(",")
                # Named string and number types of other packages (`types.UID`) carry a
                # protobuf `casttype`; structs, pointers, slices and maps are not scalars.
                scalar = not go_type.startswith(("[", "*", "map")) and (
                    go_type in scalars or "casttype=" in line
                )
                if "omitempty" in options and scalar and json_name:
                    yield f"{package}.{struct}.{json_name}"


for d, _, files in sorted(os.walk(PROTO_ROOT)):
    if "generated.proto" not in files:
        continue
    rel = os.path.relpath(d, PROTO_ROOT)  # api/core/v1 or apimachinery/pkg/apis/meta/v1
    module, path = rel.split(os.sep, 1)
    go_dir = os.path.join(MODULES, f"{module}@{VERSION}", path)
    package = "k8s.io." + rel.replace(os.sep, ".")
    for line in fields_of(go_dir, package):
        print(line)
