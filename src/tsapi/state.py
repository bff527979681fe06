"""What a running tsapi process holds: settings, its connection pool, storage and rollups."""

from dataclasses import dataclass

from tsapi.db import Pool
from tsapi.rollups import Rollups
from tsapi.settings import Settings
from tsapi.storage import Storage


@dataclass
class State:
    settings: Settings
    pool: Pool
    storage: Storage
    rollups: Rollups
