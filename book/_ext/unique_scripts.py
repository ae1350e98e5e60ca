"""A Sphinx extension of this book: each page lists each script once.

Limitation: sphinx-thebe 0.3.1 registers its inline configuration script (``const
THEBE_JS_URL = ...``) after the HTML builder has collected the registered scripts,
and Sphinx 7.4 then puts it on every page twice; the browser rejects the second
``const`` with a SyntaxError on every page. This drops exact repeats; it can go
when sphinx-thebe registers the script once.
"""

from __future__ import annotations

from typing import Any


def _drop_repeated_scripts(
    app: Any, pagename: str, templatename: str, context: dict, doctree: Any
) -> None:
    seen = set()
    unique = []
    for script in context.get("script_files", []):
        # The repeat has the filename '' where the original has None.
        filename = str(getattr(script, "filename", script) or "")
        key = (filename, tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app: Any) -> dict[str, Any]:
    # Last, after the handlers of the theme and the other extensions.
    app.connect("html-page-context", _drop_repeated_scripts, priority=1000)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
