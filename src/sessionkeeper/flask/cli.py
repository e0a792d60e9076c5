"""``flask sessions ...`` commands."""

from __future__ import annotations

import time

import click
from flask import current_app
from flask.cli import AppGroup

from ..errors import StoreUnavailable
from ..server_side import ServerSideSessions
from .migrate import migrate_command

sessions_cli = AppGroup("sessions", help="Manage stored sessions.")
sessions_cli.add_command(migrate_command)


@sessions_cli.command("cleanup")
def cleanup_command() -> None:
    """Remove expired sessions from the store."""
    backend = current_app.extensions["sessionkeeper"].backend
    if not isinstance(backend, ServerSideSessions):
        click.echo("cookie sessions live in browsers: nothing to clean up")
        return
    try:
        removed = backend.store.delete_expired(time.time())
    except StoreUnavailable as exc:
        raise click.ClickException(f"{exc}; nothing was removed") from exc
    click.echo(f"removed {removed} expired sessions from the {backend.store.name} store")
