"""Write one table as CSV (for programs), Markdown (for notes) and LaTeX (for papers)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def write_table(table: pd.DataFrame, out_dir: Path, name: str, caption: str,
                warning: str | None = None) -> list[Path]:
    """Write name.csv, name.md and name.tex; a warning heads the Markdown and ends the caption."""
    paths = [out_dir / f"{name}.{suffix}" for suffix in ("csv", "md", "tex")]
    table.to_csv(paths[0], index=False)
    note = f"\n\n> **Warning:** {warning}" if warning else ""
    blanks = table.astype(object).where(table.notna(), None)  # tabulate leaves only None blank
    markdown = blanks.to_markdown(index=False, floatfmt=".3g", missingval="")
    paths[1].write_text(f"**{caption}**{note}\n\n{markdown}\n")
    full_caption = f"{caption}. Warning: {warning}" if warning else caption
    paths[2].write_text(table.to_latex(index=False, escape=True, float_format="%.3g", na_rep="",
                                       caption=latex_escape(full_caption), label=f"tab:{name}"))
    return paths


def latex_escape(text: str) -> str:
    """pandas escapes cells but not captions."""
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)
