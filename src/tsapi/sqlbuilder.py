"""Parameterised SQL written piece by piece: each value becomes a placeholder, never SQL text."""

import uuid
from collections.abc import Sequence


class SqlBuilder:
    """Collects arguments as it writes placeholders."""

    def __init__(self) -> None:
        self.args: list[object] = []

    def arg(self, value: object, cast: str = "") -> str:
        self.args.append(value)
        return f"${len(self.args)}{cast}"

    def sensor_in(self, sensors: Sequence[uuid.UUID], column: str = "sensor") -> str:
        """``column`` is one of ``sensors``. One is an equality: with = ANY, the planner cannot
        walk a (sensor, ts) index in order, and finds one sensor's newest reading among all."""
        if len(sensors) == 1:
            return f"{column} = {self.arg(sensors[0], '::uuid')}"
        return f"{column} = ANY({self.arg(list(sensors), '::uuid[]')})"
