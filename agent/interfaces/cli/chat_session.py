"""The ``rsrag chat`` session: a conversation with the analyst about one scene, step by step.

Each question streams the agent's steps as they happen (tool calls on one line each, crop files as they
are written), then the cited answer. Commands start with ``/`` (see :data:`HELP`). The conversation is
kept per thread in the sessions file, so ``rsrag chat IMAGE --thread T`` continues it later. Ctrl-C stops
the current question (the thread stays usable); at the prompt, ``/quit`` or end of input leaves.
"""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path
from typing import TextIO

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from rich.console import Console
from rich.markup import escape

from rsrag.agent.interfaces.api import Analyst, Step
from rsrag.agent.evidence import Answer
from rsrag.agent.interfaces.cli.display import places, places_table, print_answer
from rsrag.agent.results import ToolResult, headline
from rsrag.tools.errors import QueryError, RsragError

HELP = """commands:
  /evidence   the places found in this thread (one row per box: its ids, confidence, crops)
  /zoom N     ask the agent to zoom on the N-th place of the last answer
  /trace      the steps of this thread
  /new        start a new thread (the old one stays in the sessions file)
  /help       this help
  /quit       leave (also: end of input, Ctrl-D)
anything else is a question about the image; Ctrl-C stops the current question"""

STOPPED = "stopped by the user (Ctrl-C) before this tool ran"


class ChatSession:
    """A chat REPL over one scene or a catalog of scenes (the ``rsrag chat`` command, usable with any
    input/output).

    Args:
        analyst: the configured analyst.
        image: the scene's path (``None`` with ``catalog``).
        thread: the thread to continue or start (``None``: a new one).
        out: where to print.
        catalog: the name of a catalog to chat across (its scenes are opened as the agent needs them).
    """

    def __init__(self, analyst: Analyst, image: Path | None, thread: str | None, out: Console,
                 catalog: str | None = None) -> None:
        self.analyst = analyst
        self.image = image
        self.catalog = catalog
        self.thread = thread or new_thread_id()
        self.out = out
        self.last_answer: Answer | None = None

    # --- the loop ------------------------------------------------------------------------------------

    def run(self, lines: TextIO) -> None:
        """Read questions and commands from ``lines`` until ``/quit`` or the end of input."""
        if self.image is not None:
            scene = self.analyst.workspace.scene(self.image)
            what = f"{escape(scene.path.name)} ({scene.width} x {scene.height} px)"
        else:
            if self.catalog is None:
                raise QueryError("give an image or a catalog to chat about")
            scenes = self.analyst.catalog_scenes(self.catalog)  # fails fast on an empty or unknown catalog
            what = f"catalog {escape(self.catalog)} ({len(scenes)} scene{'s' if len(scenes) != 1 else ''})"
        self.out.print(f"[bold]rsrag chat[/] {what}, thread [cyan]{self.thread}[/]; /help for commands",
                       highlight=False)
        self._resume()
        interactive = lines.isatty()
        if interactive:
            import readline  # noqa: F401  (line editing and input history for input())
        while True:
            try:
                line = input("you> ") if interactive else lines.readline()
            except EOFError:
                line = ""
            except KeyboardInterrupt:
                self.out.print("\n(Ctrl-C stops a running question; /quit leaves)")
                continue
            if not line:
                break
            line = line.strip()
            if not line:
                continue
            if not interactive:
                self.out.print(f"[bold]you>[/] {escape(line)}", highlight=False, soft_wrap=True)
            if not self.handle(line):
                break
        self.out.print(f"bye (thread {self.thread})", highlight=False)

    def handle(self, line: str) -> bool:
        """Run one question or command; ``False`` when the session should end."""
        if not line.startswith("/"):
            self.ask(line)
            return True
        command, _, arg = line[1:].partition(" ")
        command = command.lower()
        if command in ("quit", "exit", "q"):
            return False
        handlers = {"help": self._help, "evidence": self._evidence, "zoom": self._zoom, "trace": self._trace,
                    "new": self._new}
        handler = handlers.get(command)
        if handler is None:
            self.out.print(f"unknown command /{command}; /help lists the commands", highlight=False, markup=False)
        else:
            try:
                handler(arg.strip())
            except RsragError as exc:
                self.out.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return True

    def ask(self, question: str) -> Answer | None:
        """Stream one question's steps and print its answer; Ctrl-C stops it and keeps the thread usable."""
        answer: Answer | None = None
        try:
            for step in self.analyst.stream(self.image, question, thread_id=self.thread, catalog=self.catalog):
                self._print_step(step)
                answer = step.update.get("answer") or answer
        except KeyboardInterrupt:
            self._close_dangling_calls()
            self.out.print("[yellow]stopped[/] (the thread keeps the steps so far; ask again or /quit)")
            return None
        except RsragError as exc:
            self.out.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            return None
        if answer is not None:
            self.last_answer = answer
            print_answer(answer.model_copy(update={"thread_id": self.thread}), self.out)
        return answer

    # --- printing ------------------------------------------------------------------------------------

    def _print_step(self, step: Step) -> None:
        if step.update.get("answer") is not None:
            return  # printed in full once the step stream ends
        if step.text == step.node:
            return  # a step with nothing to show (start of a question, state bookkeeping)
        self.out.print(f"  [dim]{step.node:>6}[/] {escape(step.text)}", highlight=False, soft_wrap=True)
        for message in step.update.get("messages", []):
            crop = ToolResult.of(message).crop if isinstance(message, ToolMessage) else None
            if crop:
                self.out.print(f"         crop saved: {crop}", highlight=False, soft_wrap=True, markup=False)

    def _help(self, _: str) -> None:
        self.out.print(HELP, highlight=False)

    def _evidence(self, _: str) -> None:
        ledger = self.analyst.evidence(self.thread)
        if not ledger:
            self.out.print("no evidence in this thread yet")
            return
        found = places(list(ledger.values()))
        self.out.print(places_table(found, f"evidence of thread {self.thread}: {len(found)} places, {len(ledger)} records"))
        for i, place in enumerate(found, 1):
            if place.crop:
                self.out.print(f"crop of {i}: {place.crop}", highlight=False, soft_wrap=True, markup=False)

    def _zoom(self, arg: str) -> None:
        answer = self.last_answer
        if answer is None or not answer.evidence:
            self.out.print("no evidence to zoom on: ask a question first")
            return
        cited = places(answer.evidence)
        if not arg.isdigit() or not 1 <= int(arg) <= len(cited):
            self.out.print(f"usage: /zoom N, with N from 1 to {len(cited)} (the places of the last answer):")
            self.out.print(places_table(cited, "last answer"))
            return
        target = cited[int(arg) - 1].primary
        if target.region is None:
            self.out.print(f"evidence {int(arg)} ({target.id}) is a {target.kind} record, not a region of the image")
            return
        self.ask(f"Zoom on evidence {target.id} and describe what the crop shows.")

    def _trace(self, _: str) -> None:
        if importlib.util.find_spec("rsrag.agent.trace") is not None and self._print_recorded_trace():
            return
        messages = self.analyst.history(self.thread)
        if not messages:
            self.out.print("this thread has no steps yet")
            return
        self.out.print(f"[bold]thread {self.thread}[/]: {len(messages)} messages", highlight=False)
        for i, message in enumerate(messages, 1):
            self.out.print(f"{i:>4} {describe_message(message)}", highlight=False, soft_wrap=True, markup=False)

    def _print_recorded_trace(self) -> bool:
        """Print the thread's recorded trace events (:mod:`rsrag.agent.trace`); ``False`` when there are none."""
        tracer = getattr(self.analyst, "tracer", None)
        if tracer is None or not getattr(tracer.settings, "enabled", True):
            return False
        events = tracer.store.events(self.thread)
        if not events:
            return False
        self.out.print(f"[bold]trace of thread {self.thread}[/]: {len(events)} events "
                       f"(full view and exports: rsrag trace show {self.thread})", highlight=False)
        for ev in events:
            what = ev.tool or ev.node or ""
            text = ev.error if ev.status == "error" else (ev.question or ev.result or "")
            if ev.kind == "answer" and ev.answer is not None:
                text = f"cites {', '.join(ev.cited) or 'nothing'}: {ev.answer.text}"
            first = (text or "").splitlines()[0] if text else ""
            self.out.print(f"  #{ev.index:<3} {ev.kind:<9} {what:<15} {first[:200]}", highlight=False, soft_wrap=True,
                           markup=False)
        return True

    def _new(self, _: str) -> None:
        self.thread, self.last_answer = new_thread_id(), None
        self.out.print(f"new thread [cyan]{self.thread}[/]", highlight=False)

    # --- sessions ------------------------------------------------------------------------------------

    def _resume(self) -> None:
        config: RunnableConfig = {"configurable": {"thread_id": self.thread}}
        values = self.analyst.graph.get_state(config).values
        messages = values.get("messages") or []
        if not messages:
            return
        self.last_answer = values.get("answer")
        questions = [m for m in messages if m.type == "human" and not m.additional_kwargs]
        self.out.print(f"continuing thread {self.thread}: {len(questions)} earlier question(s), "
                       f"{len(values.get('evidence') or {})} evidence record(s)", highlight=False)
        if self.last_answer is not None:
            self.out.print(f"last answer: {self.last_answer.text}", highlight=False, soft_wrap=True, markup=False)

    def _close_dangling_calls(self) -> None:
        """After Ctrl-C, answer the tool calls that never ran, so the thread's history stays well-formed."""
        config: RunnableConfig = {"configurable": {"thread_id": self.thread}}
        messages = self.analyst.graph.get_state(config).values.get("messages") or []
        answered = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
        last = next((m for m in reversed(messages) if isinstance(m, AIMessage)), None)
        if last is None:
            return
        missing = [ToolMessage(content=f"Error: {STOPPED}.", name=c["name"], tool_call_id=c["id"], status="error")
                   for c in last.tool_calls if c["id"] not in answered]
        if missing:
            self.analyst.graph.update_state(config, {"messages": missing}, as_node="tools")


def new_thread_id() -> str:
    """A short random thread id."""
    return uuid.uuid4().hex[:12]


def describe_message(message: BaseMessage) -> str:
    """One line for a message of the thread's history."""
    if isinstance(message, AIMessage) and message.tool_calls:
        calls = ", ".join(f"{c['name']}({', '.join(f'{k}={v!r}' for k, v in c['args'].items())})" for c in message.tool_calls)
        return f"model  -> {calls[:300]}"
    if isinstance(message, ToolMessage):
        result = ToolResult.of(message)
        first = headline(result)
        status = " [error]" if result.status == "error" else ""
        return f"tool   {message.name or ''}{status}: {first[:300]}"
    role = {"human": "you", "ai": "model"}.get(message.type, message.type)
    if message.additional_kwargs.get("rsrag_feedback"):
        role = "check"
    return f"{role:<6} {message.text[:300]}"
