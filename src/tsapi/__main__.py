from tsapi.cli import cli

cli()
