"""``logstream up``: placeholder until the stack runner lands."""


def add_arguments(parser):
    pass


def run(args):
    raise SystemExit("logstream up: not implemented yet")
