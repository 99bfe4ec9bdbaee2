"""Counts module-level import cycles in a Rust crate's source folder: an edge A -> B when a
file of module A names module B (or an item inside it) through `crate::`, `super::` or
`self::` paths, in `use` declarations or inline; edges to A's own ancestors (a child using its
parent's items is Rust's ordinary layout) and `#[cfg(test)] mod tests` blocks do not count.
Prints every strongly connected component of more than one module, with its edges, and exits 1
when there is one (.ci/run checks every crate).

Usage: python3 tests/import_cycles.py sim/src   (also server/src, client/src, src)"""
import os, re, sys
root = sys.argv[1]
mods = {}  # module path tuple -> file
for d, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs'): continue
        rel = os.path.relpath(os.path.join(d, f), root)[:-3].split(os.sep)
        if rel[-1] in ('mod', 'lib', 'main'): rel = rel[:-1]
        if rel == [] and f == 'main.rs': continue  # the binary is a separate crate
        mods[tuple(rel)] = os.path.join(d, f)
def strip_tests(text):
    i = text.find('#[cfg(test)]\nmod tests')
    return text if i < 0 else text[:i]
def expand(prefix, body):
    """`a::{b, c::{d}}` -> ['a::b', 'a::c::d'] (good enough for use trees)."""
    out = []
    m = re.match(r'^([\w:]*?)\{(.*)\}$', body, re.S)
    if not m:
        return [prefix + body]
    head, inner = m.group(1), m.group(2)
    depth, cur, parts = 0, '', []
    for ch in inner:
        if ch == '{': depth += 1
        if ch == '}': depth -= 1
        if ch == ',' and depth == 0:
            parts.append(cur); cur = ''
        else: cur += ch
    parts.append(cur)
    for p in parts:
        p = p.strip()
        if p: out += expand(prefix + head, p)
    return out
edges = {m: set() for m in mods}
for mod, path in mods.items():
    text = strip_tests(open(path).read())
    text = re.sub(r'//[^\n]*', '', text)
    paths = []
    for u in re.findall(r'\buse\s+([^;]+);', text, re.S):
        paths += expand('', re.sub(r'\s+', '', u))
    paths += re.findall(r'\b((?:crate|super|self)(?:::\w+)+)', text)
    for p in paths:
        segs = p.split('::')
        if segs[0] == 'crate': base, segs = (), segs[1:]
        elif segs[0] in ('super', 'self'):
            base = mod
            # a non-mod.rs file's `self` is itself; `super` is its parent
            while segs and segs[0] in ('super', 'self'):
                if segs[0] == 'super': base = base[:-1]
                segs = segs[1:]
        else: continue
        target = base
        for s in segs:
            if target + (s,) in mods: target = target + (s,)
            else: break
        if target == mod or mod[:len(target)] == target: continue  # self or ancestor
        edges[mod].add(target)
# Tarjan
index, low, stack, on, sccs, i = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)
def visit(v):
    index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index: visit(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(comp)
for v in mods:
    if v not in index: visit(v)
for c in sccs:
    names = ['::'.join(m) or 'crate' for m in c]
    print('cycle:', ' <-> '.join(sorted(names)))
    for a in c:
        for b in c:
            if b in edges[a]: print('   ', '::'.join(a), '->', '::'.join(b))
print(len(sccs), 'cycles over', len(mods), 'modules')
sys.exit(1 if sccs else 0)
