"""Commands loaded on first use: ``catimg --help`` lists every command without importing any command module.

:data:`COMMANDS` is the one list of commands: the module that defines each, its one-line help (what the root
help shows; tests check it equals the first paragraph of the command's own help) and its panel in the root
help. :class:`LazyGroup` is the root click group: it imports a command's module only when that command runs
(or its own ``--help`` is asked for), and renders the root help itself with a few Rich pieces, not Typer's
help renderer (which imports Markdown and traceback support: about 0.1 s of CPU before anything is printed).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from typer.core import TyperGroup


@dataclass(frozen=True)
class CommandEntry:
    """Where a command lives and how the root help lists it."""

    module: str  # under catimg.cli
    summary: str  # first paragraph of the command's help, on one line
    panel: str


COMMANDS: dict[str, CommandEntry] = {
    "gen": CommandEntry(
        "commands_gen", "Route each prompt to a generator, then generate and save the images.", "Make images"
    ),
    "explain": CommandEntry(
        "commands_routing",
        "Show, per prompt, what every generator would give and cost, which one is picked, and why.",
        "Make images",
    ),
    "inspect": CommandEntry(
        "commands_gen",
        "Print what an image carries: prompt, seed, generator, settings, predictions, versions.",
        "Make images",
    ),
    "models": CommandEntry(
        "commands_routing",
        "List the generators of the catalog: source, settings, cost on this device, weights present, "
        "router status.",
        "Your generators",
    ),
    "bench": CommandEntry(
        "commands_bench",
        "Measure load time, seconds per step, fixed seconds per image and peak memory on this device.",
        "Your generators",
    ),
    "calibrate": CommandEntry(
        "commands_calibrate",
        "Measure your generators: generate, score and store images for a prompt set "
        "(resumable, incremental).",
        "Your generators",
    ),
    "doctor": CommandEntry(
        "commands_routing",
        "Check the installation: versions, device, Hub cache and offline readiness, router and catalog "
        "in use.",
        "Your generators",
    ),
    "measurements": CommandEntry(
        "commands_calibrate",
        "Move measurements between the calibration database and long-format CSV/JSONL files.",
        "Your generators",
    ),
    "train": CommandEntry(
        "commands_train", "Train a router from measured quality (no generator weights needed).", "Routers"
    ),
    "eval": CommandEntry(
        "commands_train",
        "Evaluate a router on held-out measurements: quality-cost curve against single generators, "
        "oracle, random.",
        "Routers",
    ),
    "plan": CommandEntry(
        "commands_plan",
        "Predict how long a plan takes on K GPUs: catimg's scheduling (actors per model in proportion to "
        "cost, work stealing) against naive round-robin. Nothing is loaded.",
        "Routers",
    ),
}


def load_command(app: Any, name: str) -> Any:
    """The click command ``name`` of the Typer ``app``, importing the module that registers it; None if
    unknown."""
    import typer.main

    entry = COMMANDS.get(name)
    if entry is None:
        return None
    importlib.import_module(f"catimg.cli.{entry.module}")
    for info in app.registered_commands:
        if (info.name or typer.main.get_command_name(info.callback.__name__)) == name:
            return typer.main.get_command_from_info(
                info,
                pretty_exceptions_short=app.pretty_exceptions_short,
                rich_markup_mode=app.rich_markup_mode,
            )
    for group in app.registered_groups:
        if group.name == name:
            return typer.main.get_group_from_info(
                group,
                pretty_exceptions_short=app.pretty_exceptions_short,
                rich_markup_mode=app.rich_markup_mode,
                suggest_commands=app.suggest_commands,
            )
    raise RuntimeError(f"catimg.cli.{entry.module} does not define the command {name!r}")  # pragma: no cover


def reflow(text: str | None) -> str | None:
    """Help text as paragraphs: the lines of a paragraph joined into one (Rich wraps it at the terminal's
    width; a docstring's own line breaks would break sentences in the middle), indented paragraphs (examples)
    kept."""
    if not text:
        return text
    paragraphs = text.split("\n\n")
    return "\n\n".join(p if p.startswith("  ") else " ".join(p.split()) for p in paragraphs)


def tidy_help(command: Any) -> None:
    """--help of ``command`` and its subcommands: paragraphs reflowed (:func:`reflow`) and no ``<bool>`` after
    boolean flags, the --help option included (Typer shows the type of every option; a flag takes no
    value)."""
    if getattr(command, "_catimg_tidy", False):
        return
    command._catimg_tidy = True
    command.help = reflow(command.help)
    for param in command.params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    get_help_option = command.get_help_option

    def help_option(ctx: Any) -> Any:
        option = get_help_option(ctx)
        if option is not None and option.metavar is None:
            option.metavar = ""
        return option

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        tidy_help(sub)


class LazyGroup(TyperGroup):
    """The root group: commands from :data:`COMMANDS`, each module imported when its command is first
    needed."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands:
            from catimg.cli import app

            command = load_command(app, cmd_name)
            if command is None:
                return None
            self.commands[cmd_name] = command
        tidy_help(self.commands[cmd_name])
        return self.commands[cmd_name]

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        """Typer suggests from the commands built so far; suggest from every command instead."""
        try:
            return self._click_resolve_command(ctx, args)
        except Exception as exc:
            from difflib import get_close_matches

            matches = get_close_matches(args[0], list(COMMANDS)) if args and hasattr(exc, "message") else []
            if matches:
                error: Any = exc  # a click UsageError: it has a message (hasattr above)
                names = ", ".join(repr(m) for m in matches)
                error.message = f"{error.message.rstrip('.')}. Did you mean {names}?"
            raise

    def format_help(self, ctx: Any, formatter: Any) -> None:
        if ctx.parent is not None:  # pragma: no cover - the root group is never nested
            return super().format_help(ctx, formatter)
        render_root_help(ctx, self)
        return None


def render_root_help(ctx: Any, group: Any) -> None:
    """The root help: usage, description (example lines keep their indent), options, commands grouped by
    panel."""
    from rich import box
    from rich.console import Console, Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    con = Console(highlight=False)
    parts: list[Any] = [
        Text.assemble(("Usage: ", "yellow"), (f"{ctx.command_path} [OPTIONS] COMMAND [ARGS]...", "bold")),
        Text(""),
    ]
    for para in (group.help or "").split("\n\n"):
        parts.extend([Text(para if para.startswith("  ") else " ".join(para.split())), Text("")])

    options = [(", ".join(p.opts), p.help or "") for p in group.get_params(ctx) if not p.hidden]
    first = max(len(name) for name in [*COMMANDS, *(o for o, _ in options)])  # one column edge in every panel

    def panel(title: str, rows: list[tuple[str, str]], style: str) -> Panel:
        t = Table(box=None, show_header=False, pad_edge=False, padding=(0, 2, 0, 0))
        t.add_column(style=style, no_wrap=True, min_width=first)
        t.add_column(ratio=1)
        for name, text in rows:
            t.add_row(name, text)
        return Panel(t, title=title, title_align="left", border_style="dim", box=box.ROUNDED)

    parts.append(panel("Options", options, "bold cyan"))
    panels: dict[str, list[tuple[str, str]]] = {}
    for name, entry in COMMANDS.items():
        panels.setdefault(entry.panel, []).append((name, entry.summary))
    parts.extend(panel(title, rows, "bold cyan") for title, rows in panels.items())
    con.print(Group(*parts), soft_wrap=False)
