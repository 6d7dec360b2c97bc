"""``agentmesh chat`` and ``agentmesh sessions``: conversations the gateway keeps.

agentmesh chat [TARGET]                  talk to an agent (default: assistant), answers streamed;
                                         every line goes with one context id, so the gateway
                                         sends the agent the conversation so far
agentmesh sessions list                  the caller's sessions, most recently used first
agentmesh sessions show CONTEXT_ID       a session's summary and turns
agentmesh sessions delete CONTEXT_ID     forget a session

In a chat: ``/new`` starts a new conversation (a new context id), ``/history``
shows this one's turns as the gateway keeps them, ``/quit`` (or Ctrl-D) ends
the chat. Ctrl-C ends the answer being streamed (or the line being typed), not
the chat.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import Any

from rich.console import Console
from rich.table import Table

from agentmesh.cli.main import connect, gateway_flag, print_json
from agentmesh.client import CallError, Client, Final, Partial, Session, StreamError
from agentmesh.runtime.types import TextPart


def register(commands: Any) -> None:
    chat: argparse.ArgumentParser = commands.add_parser(
        "chat",
        help="talk to an agent; the gateway keeps the conversation (/new, /history, /quit)",
        description="An interactive conversation: each line is sent with one context id and "
        "the answer is streamed. /new starts over, /history shows the turns, /quit or "
        "Ctrl-D ends the chat; Ctrl-C ends the current answer.",
    )
    gateway_flag(chat)
    chat.add_argument(
        "target", nargs="?", default="assistant", help="NAME or NAME/SKILL (default: assistant)"
    )
    chat.add_argument(
        "--context", default=None, help="continue this context id (default: a new one)"
    )
    chat.add_argument("--timeout", type=float, default=120.0, help="deadline of one answer (s)")
    chat.set_defaults(handler=cmd_chat)

    sessions: argparse.ArgumentParser = commands.add_parser(
        "sessions", help="list, show or delete the conversations the gateway keeps for you"
    )
    actions = sessions.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="your sessions, most recently used first")
    listing.add_argument("--limit", type=int, default=100, help="at most this many")
    show = actions.add_parser("show", help="a session's summary and turns")
    show.add_argument("context_id", help="the session's context id")
    delete = actions.add_parser("delete", help="forget a session")
    delete.add_argument("context_id", help="the session's context id")
    for parser in (listing, show, delete):
        gateway_flag(parser)
        parser.add_argument("--json", action="store_true", help="print JSON")
    sessions.set_defaults(handler=cmd_sessions)


def session_json(session: Session) -> dict[str, Any]:
    return {
        "context_id": session.context_id,
        "agent": session.agent,
        "turn_count": session.turn_count,
        "compactions": session.compactions,
        "updated_at": session.updated_at,
        "summary": session.summary,
        "turns": [{"role": t.role, "content": t.content} for t in session.turns],
    }


def cmd_sessions(args: argparse.Namespace, console: Console) -> int:
    with connect(args, timeout=10.0) as client:
        if args.action == "list":
            found = client.sessions(limit=args.limit)
            if args.json:
                print_json([session_json(s) for s in found])
                return 0
            table = Table("context id", "agent", "turns", "compactions")
            for s in found:
                table.add_row(s.context_id, s.agent, str(s.turn_count), str(s.compactions))
            console.print(table)
        elif args.action == "show":
            session = client.session(args.context_id)
            if args.json:
                print_json(session_json(session))
            else:
                _print_history(session)
        else:
            client.delete_session(args.context_id)
            if args.json:
                print_json({"deleted": args.context_id})
            else:
                print(f"deleted session {args.context_id}")
    return 0


def _print_history(session: Session) -> None:
    if session.summary:
        print(f"(summary) {session.summary}")
    for turn in session.turns:
        print(f"{turn.role}> {turn.content}")


def _new_context() -> str:
    return f"chat-{uuid.uuid4().hex[:12]}"


def cmd_chat(args: argparse.Namespace, console: Console) -> int:
    context = args.context or _new_context()
    with connect(args, timeout=args.timeout) as client:
        print(f"chat with {args.target} (context {context}); /new, /history, /quit")
        while True:
            try:
                line = input("you> ").strip()
            except EOFError:
                print()
                return 0
            except KeyboardInterrupt:  # a line abandoned: prompt again
                print()
                continue
            if not line:
                continue
            if line in ("/quit", "/exit"):
                return 0
            if line == "/new":
                context = _new_context()
                print(f"new conversation (context {context})")
                continue
            if line == "/history":
                try:
                    _print_history(client.session(context))
                except CallError as exc:
                    print(f"(no turns yet: {exc.message})")
                continue
            _turn(client, args.target, line, context)


def _turn(client: Client, target: str, text: str, context: str) -> None:
    """Stream one answer; Ctrl-C ends it (the gateway cancels the agent's call)."""
    sys.stdout.write(f"{target}> ")
    sys.stdout.flush()
    streamed = False
    try:
        for event in client.stream(target, text, context_id=context):
            if isinstance(event, Partial):
                for part in event.parts:
                    if isinstance(part, TextPart):
                        sys.stdout.write(part.text)
                        sys.stdout.flush()
                        streamed = True
            elif isinstance(event, StreamError):
                print(f"\n[{event.source}] {event.code.name}: {event.message}", file=sys.stderr)
            elif isinstance(event, Final) and not streamed:
                sys.stdout.write(event.reply.text)
        print()
    except KeyboardInterrupt:
        print("\n(answer interrupted)")
    except CallError as exc:
        print(f"\nerror: {exc.code.name}: {exc.message}", file=sys.stderr)
