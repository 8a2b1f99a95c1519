"""Rendering a sweep report: its blocks (headings, paragraphs, warnings, tables, figures) as report.md and a
self-contained report.html, through the Jinja2 templates in ``templates/``.

Markdown links each figure from ``report_files/``; the HTML page embeds it as base64.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from lossbench.engine import runfolder


@dataclass
class Block:
    """One piece of a report, in the order it is shown."""

    kind: str  # heading | para | warning | table | image
    text: str = ""
    level: int = 0
    header: list[str] = field(default_factory=list)
    body: list[list[str]] = field(default_factory=list)
    alt: str = ""
    path: str = ""  # an image's file, relative to the report
    data: str = ""  # an image's PNG, base64


class ReportPage:
    """A report's blocks in order; a figure's PNG is written to ``files_dir`` as it is added."""

    def __init__(self, files_dir: Path) -> None:
        self.files_dir = files_dir
        self.blocks: list[Block] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(Block("heading", text, level))

    def para(self, text: str) -> None:
        self.blocks.append(Block("para", text))

    def warning(self, text: str) -> None:
        self.blocks.append(Block("warning", text))

    def table(self, header: list[str], body: list[list[str]]) -> None:
        self.blocks.append(Block("table", header=header, body=body))

    def image(self, png: bytes, name: str, alt: str) -> None:
        """A figure (nothing for empty bytes: a figure with nothing to show)."""
        if not png:
            return
        runfolder.atomic_write_bytes(self.files_dir / name, png)
        self.blocks.append(Block("image", alt=alt, path=f"{self.files_dir.name}/{name}",
                                 data=base64.b64encode(png).decode()))


def _template(name: str) -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.PackageLoader("lossbench.experiments", "templates"),
                             autoescape=name.endswith(".html.j2"), trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    return env.get_template(name)


def render_markdown(page: ReportPage) -> str:
    return _template("report.md.j2").render(blocks=page.blocks)


def render_html(page: ReportPage, title: str) -> str:
    return _template("report.html.j2").render(blocks=page.blocks, title=title)
