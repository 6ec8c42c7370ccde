"""The no-loss ledger: what each fault scenario sent and received, printed after the run."""

from __future__ import annotations

ENTRIES: list[tuple[str, int, int, int, int]] = []


def account(scenario: str, sent: list[int], received: list[int]) -> None:
    """Note the counts (missing and repeated too) before the test asserts ``received == sent``."""
    missing = len(set(sent) - set(received))
    repeated = len(received) - len(set(received))
    ENTRIES.append((scenario, len(sent), len(received), missing, repeated))


def lines() -> list[str]:
    return [
        f"  {name}: sent {sent}, received {got}, missing {missing}, repeated {repeated}"
        for name, sent, got, missing, repeated in ENTRIES
    ]
