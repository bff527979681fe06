"""What a running tsapi process holds: settings, its connection pools, storage, rollups and its
read cache."""

from dataclasses import dataclass

from tsapi.cache import ReadCache
from tsapi.db import Pool
from tsapi.invalidations import Invalidations
from tsapi.rollups import Rollups
from tsapi.settings import Settings
from tsapi.storage import Storage


@dataclass
class State:
    settings: Settings
    pool: Pool
    storage: Storage
    rollups: Rollups
    direct: Pool  # background work's connections, never through a pooler
    cache: ReadCache | None = None  # None: cache_ttl is 0
    invalidations: Invalidations | None = None
