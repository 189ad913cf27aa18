"""The typer application objects; command modules attach their commands to these."""

import typer

app = typer.Typer(
    name="mixtral-export",
    help="Export Mixtral checkpoints to ONNX, build engines, and check their parity with the reference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
plugins_app = typer.Typer(help="The sparse-dispatch plugin kernels.", no_args_is_help=True)
app.add_typer(plugins_app, name="plugins")
