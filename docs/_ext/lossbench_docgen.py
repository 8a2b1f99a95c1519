"""The generated half of the documentation site: one page per registry entry, per recipe, and the config reference.

Everything here reads the code (the registries, docstrings, the pydantic
models, the recipe files, BENCHMARKS.md), so the pages cannot drift from it.
``generated_pages()`` returns ``{relative path: reStructuredText}``; the
Sphinx extension at the bottom writes them under ``docs/reference/generated/``
before Sphinx reads its sources. ``tests/test_docs.py`` calls the same
functions without Sphinx.
"""

from __future__ import annotations

import inspect
import re
import sys
import typing
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "docs" / "reference" / "generated"

#: Google-style sections a registered loss's docstring carries (napoleon renders them as well)
LOSS_SECTIONS = ("Formula", "Paper", "Official code", "Checked by")
#: the section of a data format module's docstring that draws its on-disk layout
LAYOUT_SECTION = "Layout"
#: what every loss is checked for, whatever its own tests
EVERY_LOSS_TEST = ("tests/test_losses.py", "every loss in ``CASES``: about 0 for a perfect prediction, larger for a "
                   "worse one, finite non-zero gradients, ignored entries change nothing, half-precision logits")


def _src_on_path() -> None:
    src = str(REPO / "src")
    if src not in sys.path:
        sys.path.insert(0, src)


# --------------------------------------------------------------------------- docstrings

def doc_sections(doc: str, names: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its body and the named sections (each dedented)."""
    body: list[str] = []
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in doc.splitlines():
        header = line.rstrip()[:-1] if line.rstrip().endswith(":") and not line.startswith(" ") else None
        if header in names:
            current = sections.setdefault(header, [])
        elif current is not None and (line.startswith(" ") or not line.strip()):
            current.append(line)
        else:
            current = None
            body.append(line)
    return "\n".join(body).strip(), {k: inspect.cleandoc("\n".join(v)) for k, v in sections.items()}


def plain_roles(text: str) -> str:
    """Docstring text for a page: roles (``:mod:`x```) become literals, so a page needs none of their
    targets, and outside literals the characters rst would read as markup (``|p|``, ``*``, ``x_``) are
    escaped, since loss docstrings write formulas in plain text."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"``\1``", text)
    parts = re.split(r"(``[^`]+``|(?<![\w*])\*[^\s*][^*\n]*?(?<=[^\s*])\*(?![\w*]))", text)  # literals, *emphasis*
    for i in range(0, len(parts), 2):
        part = parts[i].replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*")
        parts[i] = re.sub(r"(?<=\w)_(?=\W|$)", r"\\_", part).replace("`", "\\`")
    return "".join(parts)


def title(text: str, char: str = "=") -> str:
    return f"{text}\n{char * len(text)}\n"


def indent(text: str, by: str = "   ") -> str:
    return "\n".join(by + line if line.strip() else "" for line in text.splitlines())


def code_block(text: str, language: str = "text") -> str:
    return f".. code-block:: {language}\n\n{indent(text)}\n"


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """An rst list-table."""
    out = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        out.append(f"   * - {row[0]}")
        out += [f"     - {cell}" for cell in row[1:]]
    return "\n".join(out) + "\n"


def literal(value: object) -> str:
    return f"``{value!r}``" if not isinstance(value, str) else f"``{value}``"


# --------------------------------------------------------------------------- losses

def loss_facts(name: str) -> dict[str, str]:
    """The sections a loss's docstring declares (formula, paper, official code, checking tests), and its body."""
    _src_on_path()
    from lossbench.losses import LOSSES

    body, sections = doc_sections(inspect.getdoc(LOSSES.get(name)) or "", LOSS_SECTIONS)
    return {"summary": body.splitlines()[0] if body else "", "body": "\n".join(body.splitlines()[1:]).strip(),
            **sections}


def checking_tests(name: str) -> list[str]:
    """The ``file::test`` ids a loss's "Checked by" section names."""
    return test_ids(loss_facts(name).get("Checked by", ""))


def test_ids(text: str) -> list[str]:
    return re.findall(r"tests/[\w/]+\.py::\w+", text)


def defined_tests(path: Path) -> set[str]:
    """Names of the test functions (and test classes) a test file defines."""
    import ast

    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


def loss_doc_problems(cls: type) -> list[str]:
    """What a loss class's docstring lacks for its page: a section, or a named test that does not exist."""
    _, sections = doc_sections(inspect.getdoc(cls) or "", LOSS_SECTIONS)
    problems = [f"no {s!r} section" for s in LOSS_SECTIONS if not sections.get(s, "").strip()]
    ids = test_ids(sections.get("Checked by", ""))
    if sections.get("Checked by") and not ids:
        problems.append("'Checked by' names no tests/<file>.py::<test>")
    for test in ids:
        file, func = test.split("::")
        if not (REPO / file).is_file() or func not in defined_tests(REPO / file):
            problems.append(f"'Checked by' names {test}, which does not exist")
    return problems


def loss_page(name: str) -> str:
    _src_on_path()
    from lossbench.losses import LOSSES, loss_parameters

    cls = LOSSES.get(name)
    facts = loss_facts(name)
    params = loss_parameters(cls)
    spec = f"{name}({', '.join(f'{k}={v!r}' for k, v in params.items())})" if params else name
    parts = [f".. _loss-{name}:\n", title(f"Loss ``{name}``"), plain_roles(facts["summary"]) + "\n",
             title("Formula", "-"), code_block(facts.get("Formula", "")),
             title("Paper", "-"), plain_roles(facts.get("Paper", "")) + "\n",
             title("Official code", "-"), plain_roles(facts.get("Official code", "")) + "\n",
             title("Parameters and defaults", "-")]
    if params:
        parts.append(table(("parameter", "default"), [(f"``{k}``", literal(v)) for k, v in params.items()]))
    else:
        parts.append("No parameters.\n")
    parts.append(f"In a config: ``loss: {spec}`` (give only the parameters you change).\n")
    caps = cls.capabilities
    parts += [title("Declares", "-"), table(("capability", "value"), [
        ("takes the training class counts", "yes (needed)" if caps.needs_class_counts else "no"),
        ("deferred re-weighting (``drw_epoch``)", "yes" if caps.accepts_class_weights else "no"),
        ("made for a cosine head (``model.head: cosine``)", "yes" if caps.expects_cosine_logits else "no")])]
    tests = "\n".join(f"- ``{t}``" for t in checking_tests(name))
    parts += [title("Checked by", "-"), f"{tests}\n- ``{EVERY_LOSS_TEST[0]}``: {EVERY_LOSS_TEST[1]}\n"]
    if facts["body"]:
        parts += [title("Details", "-"), plain_roles(facts["body"]) + "\n"]
    parts.append(f"Source: ``{cls.__module__}.{cls.__qualname__}``\n")
    return "\n".join(parts)


def losses_index() -> str:
    _src_on_path()
    from lossbench.losses import LOSSES

    rows = [(f":ref:`{n} <loss-{n}>`", plain_roles(loss_facts(n)["summary"])) for n in LOSSES]
    return "\n".join([title("Losses"), "Every registered loss (``lossbench list losses``), one page each, generated "
                      "from its docstring and signature.\n", table(("loss", "what it computes"), rows),
                      ".. toctree::\n   :hidden:\n\n" + "\n".join(f"   loss-{n}" for n in LOSSES) + "\n"])


# --------------------------------------------------------------------------- models

def model_page(name: str) -> str:
    _src_on_path()
    from lossbench.models import MODELS

    entry = MODELS.get(name)
    head = "a function of the built model" if callable(entry.head) else ", ".join(f"``{p}``" for p in entry.head)
    rows = [("task", f"``{entry.task}``"), ("head parameters", head or "none"),
            ("``pretrained: imagenet``", "yes (local cache only)" if entry.imagenet else "no"),
            ("``model.stem`` values", ", ".join(f"``{s}``" for s in entry.stems) or "none"),
            ("deep supervision", "yes" if entry.deep_supervision else "no")]
    body = plain_roles(inspect.getdoc(entry.build) or entry.description)
    key = "timm:resnet10t" if name == "timm:<name>" else name
    return "\n".join([f".. _model-{slug(name)}:\n", title(f"Model ``{name}``"), body + "\n",
                      table(("declares", "value"), rows),
                      code_block(f"task: {entry.task}\nmodel: {{name: {key}}}", "yaml"),
                      f"Builder: ``{entry.build.__module__}.{entry.build.__qualname__}``\n"])


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def models_index() -> str:
    _src_on_path()
    from lossbench.models import MODELS

    rows = [(f":ref:`{n.replace('<', chr(92) + '<')} <model-{slug(n)}>`", f"``{e.task}``", plain_roles(e.description.splitlines()[0]
                                                                           if e.description else ""))
            for n, e in MODELS.items()]
    return "\n".join([title("Models"), "Every registered model (``lossbench list models``).\n",
                      table(("model", "task", "what it is"), rows),
                      ".. toctree::\n   :hidden:\n\n" + "\n".join(f"   model-{slug(n)}" for n in MODELS) + "\n"])


# --------------------------------------------------------------------------- data sources

def source_facts(name: str) -> dict[str, str]:
    """A source's summary, its module's description and its ``Layout`` section."""
    _src_on_path()
    from lossbench.data.registry import SOURCES

    entry = SOURCES.get(name)
    module = sys.modules[entry.load.__module__]
    body, sections = doc_sections(inspect.getdoc(module) or "", (LAYOUT_SECTION,))
    return {"summary": entry.description, "body": body, "layout": sections.get(LAYOUT_SECTION, ""),
            "module": entry.load.__module__, "shares_cache": entry.shares_cache, "tasks": entry.tasks}


def source_page(name: str) -> str:
    facts = source_facts(name)
    cache = ("yes: a sweep turns ``data.cache`` on, cells share one decoded copy" if facts["shares_cache"]
             else "no: it reads whole arrays quickly")
    return "\n".join([f".. _source-{name}:\n", title(f"Data source ``{name}``"), plain_roles(facts["summary"]) + "\n",
                      f"Tasks: {', '.join(f'``{t}``' for t in facts['tasks'])}.\n",
                      title("On disk", "-"), code_block(facts["layout"]),
                      title("What it reads", "-"), plain_roles(facts["body"]) + "\n",
                      f"Decoded images cached once for all cells: {cache}.\n",
                      code_block(f"data: {{source: {name}, root: path/to/data}}", "yaml"),
                      f"Source: ``{facts['module']}``\n"])


def sources_index() -> str:
    _src_on_path()
    from lossbench.data.registry import SOURCES

    rows = [(f":ref:`{n} <source-{n}>`", ", ".join(source_facts(n)["tasks"]), plain_roles(source_facts(n)["summary"]))
            for n in SOURCES]
    return "\n".join([title("Data sources"), "Every registered data source (``lossbench list sources``), with the "
                      "layout it reads from disk.\n", table(("source", "tasks", "what it reads"), rows),
                      ".. toctree::\n   :hidden:\n\n" + "\n".join(f"   source-{n}" for n in SOURCES) + "\n"])


# --------------------------------------------------------------------------- recipes

COST = re.compile(r"\b(measured|budget|hours?|minutes?|\d+(\.\d+)? ?(s|h|min)\b|wall time|CPU time)", re.I)


def sentences(text: str) -> list[str]:
    return [t.strip() for t in re.split(r"(?:(?<=\.)|(?<=\.\)))\s+(?=[A-Z(`])", " ".join(text.split())) if t.strip()]


def recipe_paths() -> list[Path]:
    return sorted((REPO / "recipes").glob("*.yaml"))


def recipe_header(path: Path) -> list[str]:
    """The comment lines a recipe starts with, without the ``#``."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[2:] if line.startswith("# ") else line[1:])
    return lines


def benchmark_sections(recipe: str) -> list[tuple[str, str]]:
    """(heading, anchor) of each BENCHMARKS.md section that names ``recipes/<recipe>``."""
    found, heading = [], None
    for line in (REPO / "BENCHMARKS.md").read_text().splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
        elif heading and f"recipes/{recipe}" in line and (heading, slug(heading)) not in found:
            found.append((heading, slug(heading)))
    return found


COMMAND = re.compile(r"^\s*(Run:\s*)?((taskset -c \d+ )?lossbench (sweep|train)\b.*)$")


def recipe_commands(header: list[str]) -> list[str]:
    """The commands a recipe's header gives: lines that are a ``lossbench`` command (continued after
    a backslash), or a command quoted in backticks."""
    commands: list[str] = []
    for line in header:
        if commands and commands[-1].endswith("\\"):
            commands[-1] += "\n" + line.strip()
        elif (match := COMMAND.match(line)):
            commands.append(match[2].strip())
        else:
            commands += re.findall(r"`((?:taskset -c \d+ )?lossbench (?:sweep|train) [^`]+)`", line)
    return commands


def recipe_facts(path: Path) -> dict[str, object]:
    """What a recipe's header comment says: its first sentence, the commands, the sentences about cost."""
    header = recipe_header(path)
    prose = [ln for ln in header if not COMMAND.match(ln)]
    said = sentences("\n".join(prose))
    cost = [t for t in said[1:] if COST.search(t)]
    return {"summary": said[0] if said else "", "commands": recipe_commands(header), "cost": cost,
            "header": header, "benchmarks": benchmark_sections(path.name)}


def recipe_page(path: Path) -> str:
    facts = recipe_facts(path)
    run = facts["commands"] or [f"lossbench sweep recipes/{path.name}"]
    cost = ("\n".join(f"- {plain_roles(c)}" for c in facts["cost"]) if facts["cost"]
            else "Not measured by this project (its data is not on the reference machine); the file below says "
                 "what it trains.")
    results = ("\n".join(f"- :doc:`/benchmarks`, section *{h}*" for h, _ in facts["benchmarks"])
               if facts["benchmarks"] else "BENCHMARKS.md has no result for this recipe yet.")
    return "\n".join([f".. _recipe-{path.stem}:\n", title(f"Recipe ``{path.name}``"),
                      plain_roles(facts["summary"]) + "\n",
                      title("Command", "-"), code_block("\n".join(run), "bash"),
                      title("Cost", "-"), cost + "\n", title("Result", "-"), results + "\n",
                      title("The recipe file", "-"), f".. literalinclude:: /../recipes/{path.name}\n"
                      "   :language: yaml\n"])


def recipes_index() -> str:
    rows = [(f":ref:`{p.name} <recipe-{p.stem}>`", plain_roles(recipe_facts(p)["summary"])) for p in recipe_paths()]
    return "\n".join([title("Recipes"), "Each file in ``recipes/`` is a config for one system this project "
                      "reproduces (``tests/test_recipes.py`` runs every one on a tiny copy of its data layout).\n",
                      table(("recipe", "what it reproduces"), rows),
                      ".. toctree::\n   :hidden:\n\n" + "\n".join(f"   recipe-{p.stem}" for p in recipe_paths()) + "\n"])


# --------------------------------------------------------------------------- config

def type_name(annotation: object) -> str:
    """A readable type: ``int``, ``float | None``, ``'val' | 'test'``, ``list[str]``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(a) for a in args)}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def config_keys(model: type | None = None, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, description) of every key of the experiment config, sections recursed into."""
    _src_on_path()
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    from lossbench.config import Experiment

    rows = []
    for key, field in (model or Experiment).model_fields.items():
        ann = field.annotation
        sections = [a for a in (typing.get_args(ann) or (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if field.default_factory is not None:
            default = "(section)" if sections else repr(field.default_factory())
        else:
            default = "required" if field.default is PydanticUndefined else repr(field.default)
        summary = (inspect.getdoc(sections[0]) or "").splitlines()[0] if sections else ""
        rows.append((prefix + key, type_name(ann), default, field.description or summary))
        inner = f"{prefix}{key}.<key>." if typing.get_origin(ann) is dict else f"{prefix}{key}."
        for section in sections:
            rows += config_keys(section, inner)
    return rows


def sweep_keys() -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, description) of what a sweep file adds: ``report:`` and ``tune:``."""
    _src_on_path()
    from lossbench.experiments.schema import ReportOptions, TuneConfig

    return config_keys(ReportOptions, "report.") + config_keys(TuneConfig, "tune.")


def key_rows(keys: list[tuple[str, str, str, str]]) -> list[tuple[str, ...]]:
    return [(f"``{k}``", f"``{t}``", f"``{d}``" if d not in ("required", "(section)") else d, plain_roles(desc))
            for k, t, d, desc in keys]


def config_page() -> str:
    rows = key_rows(config_keys())
    _src_on_path()
    from lossbench.config import Experiment

    targets = "".join(f".. py:class:: {name}\n   :no-index-entry:\n\n   One experiment: the keys below, validated.\n\n"
                      for name in dict.fromkeys(["lossbench.config.Experiment",
                                                 f"{Experiment.__module__}.{Experiment.__qualname__}"]))
    return "\n".join([title("Config reference"), targets, "Every key of an experiment config, generated from the pydantic "
                      "models in ``lossbench.config`` (a wrong key or value is one error line naming it). A sweep "
                      "config adds ``grid:``, ``report:`` and ``tune:`` (below).\n",
                      table(("key", "type", "default", "description"), rows), title("Sweep keys", "-"),
                      "A sweep file is an experiment config plus ``grid:`` (dotted config keys to lists of values; "
                      "``\"a, b\": [[1, 2], ...]`` zips keys; :doc:`/guide/sweeps`), ``report:`` (what the report "
                      "compares, :doc:`/guide/reading-a-report`) and ``tune:`` (:doc:`/guide/tuning`), generated from "
                      "``lossbench.experiments.schema``:\n",
                      table(("key", "type", "default", "description"), key_rows(sweep_keys()))])


# --------------------------------------------------------------------------- all pages

def page_problems() -> list[str]:
    """Every registered entry, recipe or config key whose generated page would lack a required part."""
    _src_on_path()
    import lossbench.data  # noqa: F401  (registers the sources)
    from lossbench.data.registry import SOURCES
    from lossbench.losses import LOSSES
    from lossbench.models import MODELS

    problems = [f"loss {n}: {p}" for n, cls in LOSSES.items() for p in loss_doc_problems(cls)]
    for name in SOURCES:
        layout = source_facts(name)["layout"]
        if "──" not in layout:
            problems.append(f"source {name}: its module docstring has no {LAYOUT_SECTION!r} section with a tree")
    problems += [f"model {n}: no docstring on its builder" for n, e in MODELS.items()
                 if not (inspect.getdoc(e.build) or e.description)]
    for path in recipe_paths():
        facts = recipe_facts(path)
        if not facts["summary"] or not facts["commands"]:
            problems.append(f"recipe {path.name}: its header comment needs a summary and a lossbench command")
    problems += [f"config key {k}: no description" for k, _, _, desc in config_keys() if not desc]
    return problems


def generated_pages() -> dict[str, str]:
    """Every generated page, by path relative to ``docs/reference/generated``."""
    _src_on_path()
    import lossbench.data  # noqa: F401  (registers the sources)
    from lossbench.data.registry import SOURCES
    from lossbench.losses import LOSSES
    from lossbench.models import MODELS

    pages = {"losses.rst": losses_index(), "models.rst": models_index(), "sources.rst": sources_index(),
             "recipes.rst": recipes_index(), "config.rst": config_page()}
    pages.update({f"loss-{n}.rst": loss_page(n) for n in LOSSES})
    pages.update({f"model-{slug(n)}.rst": model_page(n) for n in MODELS})
    pages.update({f"source-{n}.rst": source_page(n) for n in SOURCES})
    pages.update({f"recipe-{p.stem}.rst": recipe_page(p) for p in recipe_paths()})
    return pages


def write_pages(out: Path = OUT) -> list[Path]:
    """Write the generated pages, leaving unchanged files untouched (Sphinx then rebuilds only what changed)."""
    out.mkdir(parents=True, exist_ok=True)
    pages = generated_pages()
    for stale in set(p.name for p in out.glob("*.rst")) - set(pages):
        (out / stale).unlink()
    for rel, text in pages.items():
        path = out / rel
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return [out / rel for rel in pages]


def on_builder_inited(app) -> None:
    """Write the pages; each missing part is a warning, so the strict build (``-W``) fails on it."""
    from sphinx.util import logging

    write_pages()
    for problem in page_problems():
        logging.getLogger(__name__).warning(f"generated reference: {problem}")


def setup(app):  # the Sphinx extension
    app.connect("builder-inited", on_builder_inited)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
