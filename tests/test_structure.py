"""Structure of the package (issue: one quantizer interface).

* ``odm_mm``'s module-level imports form no cycle (lazy imports inside
  functions are allowed: they run after every module is loaded);
* no module outside the quantizer files compares anything with a quantizer
  name: the quantizers own their behaviour, callers ask them.
"""
import ast
import os
import os.path as osp

import odm_mm  # noqa: F401  (registers every quantizer)
from odm_mm.quantizers import QUANTIZERS

PKG = osp.dirname(osp.abspath(odm_mm.__file__))


def _modules():
    for root, _, files in os.walk(PKG):
        for f in files:
            if f.endswith('.py'):
                path = osp.join(root, f)
                rel = osp.relpath(path, osp.dirname(PKG))[:-3]
                name = rel.replace(os.sep, '.')
                if name.endswith('.__init__'):
                    name = name[:-len('.__init__')]
                with open(path) as fh:
                    yield name, path, ast.parse(fh.read(), path)


def _top_level_imports(name, tree, is_pkg, lazy=False):
    """odm_mm modules imported at module level (not inside functions);
    ``lazy=True``: also those imported inside functions and classes."""
    base = name if is_pkg else name.rpartition('.')[0]
    out = set()
    for node in tree.body:  # module level only; also inside if/try blocks
        stack = [node]
        while stack:
            n = stack.pop()
            if not lazy and isinstance(n, (ast.FunctionDef,
                                           ast.AsyncFunctionDef,
                                           ast.ClassDef)):
                continue
            if isinstance(n, ast.Import):
                out |= {a.name for a in n.names if a.name.startswith('odm_mm')}
            elif isinstance(n, ast.ImportFrom):
                if n.level:
                    parts = base.split('.')
                    parent = '.'.join(parts[:len(parts) - n.level + 1])
                    mod = f'{parent}.{n.module}' if n.module else parent
                else:
                    mod = n.module or ''
                if mod.startswith('odm_mm'):
                    out.add(mod)
                    out |= {f'{mod}.{a.name}' for a in n.names}
            stack.extend(ast.iter_child_nodes(n))
    return out


def _import_graph(lazy=False, prefix='odm_mm'):
    mods = {}
    for name, path, tree in _modules():
        mods[name] = (tree, path.endswith('__init__.py'))
    graph = {}
    for name, (tree, is_pkg) in mods.items():
        if not name.startswith(prefix):
            continue
        deps = {d for d in _top_level_imports(name, tree, is_pkg, lazy)
                if d in mods and d != name and d.startswith(prefix)}
        # importing a package's submodule runs the package __init__ first,
        # but that is an edge only when the package imports this module
        graph[name] = deps - {p for p in deps if name.startswith(p + '.')}
    return graph


def _cycles(graph):
    state, cycle = {}, []

    def visit(n, path):
        state[n] = 1
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                cycle.append(path + [d])
            elif d not in state:
                visit(d, path + [d])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    return cycle


def test_module_level_imports_have_no_cycle():
    graph = _import_graph()
    assert len(graph) > 20 and 'odm_mm.quantizers' in graph
    assert 'odm_mm.deploy.runtime_tokens' in graph
    cycle = _cycles(graph)
    assert not cycle, f'import cycles: {cycle}'


def test_deploy_package_has_no_cycle_even_through_lazy_imports():
    """Inside odm_mm.deploy, function-level imports count too (the runtime
    and its token layers once imported each other, one side lazily)."""
    graph = _import_graph(lazy=True, prefix='odm_mm.deploy')
    assert {'odm_mm.deploy.runtime', 'odm_mm.deploy.runtime_tokens',
            'odm_mm.deploy.onnx_export', 'odm_mm.deploy.profile'} <= set(graph)
    cycle = _cycles(graph)
    assert not cycle, f'import cycles in odm_mm.deploy: {cycle}'


def test_the_cycle_check_finds_a_cycle():
    a = ast.parse('from .b import x')
    b = ast.parse('from odm_mm import a\nimport odm_mm.c')
    assert _top_level_imports('odm_mm.a', a, False) == {'odm_mm.b',
                                                        'odm_mm.b.x'}
    assert _top_level_imports('odm_mm.b', b, False) == {'odm_mm',
                                                        'odm_mm.a',
                                                        'odm_mm.c'}
    lazy = ast.parse('def f():\n    from . import quantizers')
    assert _top_level_imports('odm_mm.m', lazy, False) == set()


def _compared_names(tree):
    """String constants that appear in comparisons (==, !=, in, not in)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for n in [node.left] + node.comparators:
                for c in ast.walk(n):
                    if isinstance(c, ast.Constant) and isinstance(c.value,
                                                                  str):
                        found.add(c.value)
    return found


def test_no_branch_on_quantizer_names_outside_quantizer_files():
    names = set(QUANTIZERS)
    assert {'odm', 'pams', 'daq', 'ddtb'} <= names
    offenders = {}
    for name, path, tree in _modules():
        if osp.basename(osp.dirname(path)) == 'quantizers':
            continue  # the quantizer family itself (odm_mm/quantizers/)
        hit = _compared_names(tree) & names
        if hit:
            offenders[name] = sorted(hit)
    assert not offenders, offenders
    bad = ast.parse("if cfg.method in ('odm', 'x'):\n    pass")
    assert _compared_names(bad) & names == {'odm'}
