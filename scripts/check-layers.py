#!/usr/bin/env python3
"""Checks that common/src is layered one way and has no import cycles.

Layers, lowest first (a module may import its own layer and the ones below, never above):

    0  clock, obs, http      time, logs/metrics, framework-neutral request/response
    1  protocol              WeChat and IM wire formats, signatures, crypto, API clients (pure)
    2  config                typed configuration
    3  store                 the persistence port and its implementations
    4  records               one module per stored record
    5  app                   what a flow runs with
    6  flows                 what happens for each event
    7  handlers              adapters: parse, call a flow, map the outcome
    8  lambda                the lambda_http glue

Every `crate::…` and `super::…` path in every file (tests included) is an edge from that file's
module to the module the path names. The check fails on an upward edge, on a cycle among
modules, on a module outside the known layers, and, so that it can never pass vacuously, when it
found no edge at all or a layer with no module. It prints every edge it checked.

Also: outside `records/` and `store/`, no attribute name is written as a string literal in a
record read or write (`.s("…")`, `Update::set("…", …)`, `Cond::eq("…", …)`, …): records own their
attributes.

    scripts/check-layers.py [--quiet] [ROOT]     (ROOT defaults to common/src)
    scripts/check-layers.py --self-test          (shows that bad trees fail)
"""

import os
import re
import sys
import tempfile

LAYERS = {
    "clock": 0,
    "obs": 0,
    "http": 0,
    "protocol": 1,
    "config": 2,
    "store": 3,
    "records": 4,
    "app": 5,
    "flows": 6,
    "handlers": 7,
    "lambda": 8,
}

# Record reads and writes that name an attribute; only records/ and store/ may spell one out.
ATTR_CALL = re.compile(
    r"""(\.(s|n|bool|with|with_opt)\(\s*"|"""
    r"""\b(Update::(set|set_if_absent|add|remove)|Cond::(eq|ne|lt|le|gt|ge|has|lacks))\(\s*"|"""
    r"""\battrs\.(get|insert|remove|contains_key)\(\s*"|"""
    r"""\b[sn]\(\s*[a-z_]+\s*,\s*"|"""
    r"""\(\s*"[a-z_]+"\s*,\s*(Attr::|[A-Za-z_.]+\.into\(\)))"""
)
ATTR_FREE = ("records", "store")


def module_of(root, path):
    rel = os.path.relpath(path, root)[: -len(".rs")].split(os.sep)
    if rel[-1] in ("mod", "lib"):
        rel = rel[:-1]
    return tuple(rel)


def strip_comments(text):
    out = []
    for line in text.splitlines():
        i = line.find("//")
        # A `//` inside a string literal (a URL) is not a comment.
        while i >= 0 and line[:i].count('"') % 2 == 1:
            i = line.find("//", i + 2)
        out.append(line if i < 0 else line[:i])
    return "\n".join(out)


PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^}]*)\}", re.S)


def referenced(text):
    """The paths a file names, with `use a::{b, c::d}` groups expanded."""
    for m in GROUP.finditer(text):
        base = m.group(2)
        for part in m.group(3).split(","):
            part = part.strip().split(" as ")[0].strip()
            if part and part != "self":
                yield m.group(1), base + "::" + part.replace(" ", "")
            elif part == "self":
                yield m.group(1), base
    for m in PATH.finditer(text):
        yield m.group(1), m.group(2)


def resolve(src, head, tail, modules, is_mod_file):
    segs = [s for s in tail.split("::") if s]
    if head == "crate":
        base = []
    else:
        # `super` from a file `a/b.rs` (module a::b) is `a`; from `a/b/mod.rs` (module a::b) it
        # is `a` as well; a test module inside a file refers to the file's module.
        base = list(src)
        while segs and segs[0] == "super":
            segs = segs[1:]
            base = base[:-1]
        if not is_mod_file:
            base = base[:-1]
        # `use super::*` inside `mod tests` names the file itself.
        if not segs:
            return src
    full = tuple(base + segs)
    for n in range(len(full), 0, -1):
        if full[:n] in modules:
            return full[:n]
    return None


def check(root, quiet=False):
    files = {}
    for dp, _, fns in os.walk(root):
        for f in fns:
            if f.endswith(".rs"):
                p = os.path.join(dp, f)
                files[module_of(root, p)] = p
    modules = set(files)
    problems = []
    edges = set()
    for mod, path in sorted(files.items()):
        if not mod:
            continue
        if mod[0] not in LAYERS:
            problems.append(f"{path}: module {mod[0]} is in no layer")
            continue
        text = strip_comments(open(path, encoding="utf-8").read())
        is_mod_file = path.endswith("mod.rs")
        for head, tail in referenced(text):
            # `super::*` in a file's own test module names the file.
            target = resolve(mod, head, tail, modules, is_mod_file)
            if head == "super" and not is_mod_file and tail.startswith("::*"):
                target = mod
            if target is None or target == mod or not target:
                continue
            # A parent module declaring (or re-exporting) its children is not an import.
            if target[: len(mod)] == mod:
                continue
            edges.add((mod, target))
        if mod[0] not in ATTR_FREE:
            for n, line in enumerate(text.splitlines(), 1):
                if ATTR_CALL.search(line):
                    problems.append(
                        f"{path}:{n}: attribute name spelled outside records/: {line.strip()}"
                    )
    for a, b in sorted(edges):
        la, lb = LAYERS.get(a[0]), LAYERS.get(b[0])
        if lb is None:
            problems.append(f"{'::'.join(a)} imports {'::'.join(b)}, which is in no layer")
        elif lb > la:
            problems.append(
                f"upward import: {'::'.join(a)} (layer {la} {a[0]}) -> {'::'.join(b)} (layer {lb} {b[0]})"
            )
    for cycle in cycles(edges):
        problems.append("import cycle: " + " -> ".join("::".join(m) for m in cycle + [cycle[0]]))
    if not edges:
        problems.append("no imports found: nothing was checked")
    present = {m[0] for m in modules if m}
    for layer in LAYERS:
        if layer not in present:
            problems.append(f"layer {layer} has no module (is ROOT right?)")
    if not quiet:
        for a, b in sorted(edges):
            print(f"  {'::'.join(a):32} -> {'::'.join(b)}")
    print(
        f"check-layers: {len(edges)} import edges among {len(modules)} modules checked, "
        f"{len(problems)} problem(s)"
    )
    for p in problems:
        print("  " + p)
    return not problems


def cycles(edges):
    graph = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def self_test():
    """A good tree passes; an upward import, a cycle and a spelled attribute each fail."""

    def tree(files):
        d = tempfile.mkdtemp()
        for rel, body in files.items():
            p = os.path.join(d, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            open(p, "w").write(body)
        return d

    base = {name + ".rs": "" for name in ("clock", "obs", "http", "config", "app", "lambda")}
    for layer in ("protocol", "store", "records", "flows", "handlers"):
        base[f"{layer}/mod.rs"] = ""
    base["records/a.rs"] = "use crate::store::Write;\n"
    base["flows/x.rs"] = "use crate::records::a;\n"
    base["flows/y.rs"] = "use crate::flows::x;\n"
    base["handlers/h.rs"] = "use crate::flows::{x, y};\n"
    good = tree(base)
    upward = tree({**base, "records/a.rs": "use crate::flows::x;\n"})
    cyc = tree({**base, "flows/x.rs": "use crate::flows::y;\n"})
    spelled = tree({**base, "flows/x.rs": 'fn f(i: &Item) { i.s("status"); }\n'})
    results = {
        "good": check(good, quiet=True),
        "upward": check(upward, quiet=True),
        "cycle": check(cyc, quiet=True),
        "spelled": check(spelled, quiet=True),
    }
    ok = results["good"] and not any(results[k] for k in ("upward", "cycle", "spelled"))
    print("check-layers self-test:", "passed" if ok else f"FAILED {results}")
    return ok


def main():
    args = sys.argv[1:]
    if args == ["--self-test"]:
        sys.exit(0 if self_test() else 1)
    quiet = "--quiet" in args
    args = [a for a in args if a != "--quiet"]
    root = args[0] if args else os.path.join(os.path.dirname(__file__), "..", "common", "src")
    sys.exit(0 if check(os.path.normpath(root), quiet) else 1)


if __name__ == "__main__":
    main()
