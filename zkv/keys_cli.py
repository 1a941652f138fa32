"""``zkv keys``: make the CurveZMQ key pairs a secured cluster runs on (see zkv.net.security)."""

from __future__ import annotations

from pathlib import Path

import typer

from zkv.keys import KeyFileError, generate

keys_app = typer.Typer(help="CurveZMQ keys: the cluster key pair and client key pairs.",
                       no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                       pretty_exceptions_enable=False,
                       context_settings={"help_option_names": ["-h", "--help"]})


@keys_app.command("generate")
def keys_generate(
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write the key files to."),
    name: str = typer.Option(..., "--name", "-n", help="Key name: NAME.key (public) and "
                                                       "NAME.key_secret (keep private)."),
) -> None:
    """Write a key pair: NAME.key (public, give it out) and NAME.key_secret (mode 0600).

    \b
    zkv keys generate --out /etc/zkv/keys --name cluster    # shared by every node
    zkv keys generate --out ~/.zkv --name alice              # one per client
    cp /etc/zkv/keys/cluster.key ~/.zkv/alice.key /etc/zkv/authorized/
    """
    if not name or "/" in name or name.startswith("."):
        typer.echo(f"zkv: --name: must be a plain file name, got {name!r}", err=True)
        raise typer.Exit(2)
    try:
        public, secret = generate(out, name)
    except (KeyFileError, OSError) as exc:
        typer.echo(f"zkv: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"public key: {public}\nsecret key: {secret}")
