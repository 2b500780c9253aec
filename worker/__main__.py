"""``python -m worker``: what ``hookline worker`` execs."""

from worker.main import main

main()
