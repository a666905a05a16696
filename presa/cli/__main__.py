"""`python -m presa.cli` runs the command line."""

from presa.cli import main

main()
