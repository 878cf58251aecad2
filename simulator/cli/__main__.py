"""`python -m simulator.cli`: the `attnsim` command line."""

from simulator.cli import main

main()
