"""One home for each default: config/schema.yaml. No parameter or dataclass field in the package
defaults to the value the schema gives the config key of the same name (a second copy that drifts
when the schema's changes)."""
import ast

import yaml

from conftest import ROOT


def schema_defaults(node, path=()) -> dict[str, list[tuple[str, object]]]:
    """leaf key -> [(dotted config key, schema default)] over the whole schema."""
    out: dict[str, list] = {}
    if not isinstance(node, dict):
        return out
    for key, sub in (node.get("properties") or {}).items():
        if isinstance(sub, dict) and "default" in sub and sub["default"] is not None:
            out.setdefault(key, []).append((".".join((*path, key)), sub["default"]))
        for k, v in schema_defaults(sub, (*path, key)).items():
            out.setdefault(k, []).extend(v)
    for key in ("items", "additionalProperties"):
        for k, v in schema_defaults(node.get(key), path).items():
            out.setdefault(k, []).extend(v)
    return out


def code_defaults(tree) -> list[tuple[str, ast.expr]]:
    """(name, default expression) of every function parameter and dataclass-style field with a default."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            positional = a.posonlyargs + a.args
            out += [(p.arg, d) for p, d in zip(positional[len(positional) - len(a.defaults):], a.defaults)]
            out += [(p.arg, d) for p, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
        elif isinstance(node, ast.ClassDef):
            out += [(s.target.id, s.value) for s in node.body
                    if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name) and s.value is not None]
    return out


def test_no_schema_default_is_repeated_in_the_package():
    defaults = schema_defaults(yaml.safe_load((ROOT / "config" / "schema.yaml").read_text()))
    assert {"min_words", "rouge_threshold", "confidence", "batch_size", "device"} <= set(defaults)  # it reads them
    repeats = []
    for path in sorted((ROOT / "src" / "lionflow").rglob("*.py")):
        for name, expr in code_defaults(ast.parse(path.read_text())):
            try:
                value = ast.literal_eval(expr)
            except ValueError:
                continue
            repeats += [f"{path.relative_to(ROOT)}:{expr.lineno}: {name}={value!r} repeats the schema's {key}"
                        for key, default in defaults.get(name, ()) if value == default and type(value) is type(default)]
    assert not repeats, "\n".join(repeats)


def test_the_check_finds_a_repeat():
    tree = ast.parse("def f(x, min_words: int = 4, device='cpu'):\n    pass\n")
    assert [(n, ast.literal_eval(e)) for n, e in code_defaults(tree)] == [("min_words", 4), ("device", "cpu")]
