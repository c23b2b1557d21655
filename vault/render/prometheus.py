"""The Prometheus text exposition format, for node_exporter's textfile collector: families of
gauges with HELP and TYPE, label values escaped as the format requires and their control
characters shown (the file is also printed to stdout)."""

from __future__ import annotations

from vault.render.text import printable

# The first line of every metrics file vault writes: a comment to Prometheus, and how vault knows
# a file it may replace (docs/operations.md). Files written before it began with the first family.
METRICS_MARKER = "# vault-metrics-v1: written by vault, replaced on every run"


def _escape(value: str) -> str:
    value = printable(value, lines=True)  # a line feed has the format's own escape, below
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Family(list):
    def append(self, value: float, **labels: str) -> None:
        inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        number = str(int(value)) if float(value).is_integer() else repr(round(value, 3))
        super().append(f"{{{inner}}} {number}" if inner else f" {number}")


class Exposition:
    """The Prometheus text format: each family's HELP, TYPE and samples together."""

    def __init__(self) -> None:
        self.families: dict[str, tuple[str, Family]] = {}

    def family(self, name: str, help_text: str) -> Family:
        samples = Family()
        self.families[name] = (help_text, samples)
        return samples

    def text(self) -> str:
        lines = [METRICS_MARKER]
        for name, (help_text, samples) in self.families.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            lines += [name + sample for sample in samples]
        return "\n".join(lines) + "\n"
