"""Settings, paths, disk caches and the registries: what every other layer stands on (imports
nothing above it).

* :mod:`.paths`       where the package, its assets and the repository are;
* :mod:`.settings`    the one settings dataclass (CLI flags, ``UNLEARN_*`` variables, a TOML file);
* :mod:`.cache`       atomic writes and cache keys computed from content (``entry_path``);
* :mod:`.cache_admin` what each cache is keyed by (``assets/caches.toml``), ``cache info|clear``;
* ``assets/``         data, not code: the registries (``targets.toml``, ``rmu.toml``,
  ``caches.toml``), the shipped SAE (weights, statistics, card) and the app's favicon, all
  read through :data:`.paths.ASSETS`.
"""
