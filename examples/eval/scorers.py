"""A custom scorer for `relay eval --scorer python:examples/eval/scorers.py:one_line`."""


def one_line(output: str, row: object) -> tuple[bool, str]:
    """Pass when the reply is a single line of at most eight words."""
    words = len(output.split())
    passed = "\n" not in output.strip() and words <= 8
    return passed, f"{words} words" + ("" if passed else ", expected one short line")
