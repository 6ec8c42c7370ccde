"""``logstream simulate``: placeholder until the simulator lands."""


def add_arguments(parser):
    pass


def run(args):
    raise SystemExit("logstream simulate: not implemented yet")
