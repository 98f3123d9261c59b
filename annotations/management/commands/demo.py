"""`manage.py demo`: the README's first command. Migrates, seeds the demo projects and accounts
(idempotent), prints where to go and how to log in, then serves the app on 127.0.0.1:8000."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotations.demo import DemoError, DemoResult, seed_demo


class Command(BaseCommand):
    help = (
        "Set up the demo: create the database, add demo projects built from real data and demo "
        "accounts (passwords printed), then start the development server."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--no-serve", action="store_true", help="Seed and print the logins, but do not serve."
        )
        parser.add_argument("--addr", default="127.0.0.1", help="Address to serve on.")
        parser.add_argument("--port", type=int, default=8000, help="Port to serve on.")

    def handle(self, *args, no_serve: bool, addr: str, port: int, **options) -> None:
        # The demo resets the demo accounts' passwords and serves without TLS: never on a
        # production configuration.
        if not settings.DEBUG:
            raise CommandError(
                "The demo runs on a local machine only: start it with DEBUG=1 "
                "(e.g. `DEBUG=1 python manage.py demo`)."
            )
        if not 0 < port < 65536:
            raise CommandError(f"--port {port} is not a TCP port (1–65535).")
        self.stdout.write("Preparing the database…")
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("Adding the demo projects and accounts…")
        started = time.monotonic()
        try:
            result = seed_demo()
        except DemoError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self._banner(result, addr, port, time.monotonic() - started, no_serve))
        if not no_serve:
            # No autoreloader: it would start this command again in a child process.
            call_command("runserver", f"{addr}:{port}", use_reloader=False)

    def _banner(
        self, result: DemoResult, addr: str, port: int, seconds: float, no_serve: bool
    ) -> str:
        host = f"[{addr}]" if ":" in addr else addr
        added = sum(result.created_items.values())
        lines = [
            "",
            "=" * 72,
            f"  DataPrepOps demo — {'ready' if no_serve else 'starting'}"
            f" ({added:,} items added in {seconds:.1f} s)",
            "",
        ]
        for project in result.projects:
            lines.append(f"  • {project.name}: {project.item_count:,} {project.item_kind} items")
        lines += ["", f"  Open  http://{host}:{port}/   and log in as:", ""]
        width = max(len(a.username) for a in result.accounts)
        pwidth = max(len(a.password) for a in result.accounts)
        for account in result.accounts:
            what = (
                "superuser (Django admin at /admin/), project admin"
                if account.is_superuser
                else account.role
            )
            lines.append(f"    {account.username:<{width}}  {account.password:<{pwidth}}  {what}")
        lines += [
            "",
            f"  These passwords are kept in {result.credentials_path}",
            "  Run the same command again to serve the same demo; nothing is added twice.",
            "=" * 72,
            "",
        ]
        return "\n".join(lines)
