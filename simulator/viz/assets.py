"""The dashboard's browser assets, served from a local cache so the page works offline.

Solara's server proxies the JavaScript and CSS its page loads (`/_solara/cdn/...`) and, on a cache
miss, fetches them from a public CDN, which fails offline and leaves a blank page. The `[viz]`
extra installs the `solara-assets` package, which puts those npm packages into
`<prefix>/share/solara/cdn/`; `attnsim viz` points Solara's cache there and its CDN at a closed
local port, so a missing asset fails at once instead of reaching out.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The npm packages the page loads with ipyvuetify < 3 (solara's vuetify-2 app), by directory in the cache.
REQUIRED_ASSETS = (
    "@widgetti/solara-vuetify-app@10.1.1/dist",
    "@widgetti/vue-grid-layout@2.3.13-alpha.2",
    "requirejs@2.3.6",
    "font-awesome@4.5.0/css",
)
SCENARIO_ENV = "ATTNSIM_VIZ_SCENARIO"  # the resolved scenario's file, for the dashboard module
NO_CDN = "http://127.0.0.1:9/npm/"  # the discard port, closed: a cache miss fails instead of going online


def asset_cache() -> Path:
    """Where `solara-assets` installs the npm packages (Solara's default proxy cache directory)."""
    return Path(sys.prefix) / "share" / "solara" / "cdn"


def missing_assets(cache: Path) -> list[str]:
    """The required asset directories `cache` lacks."""
    return [name for name in REQUIRED_ASSETS if not (cache / name).is_dir()]


def server_environment(cache: Path, scenario_file: Path) -> dict[str, str]:
    """Environment for the Solara server: the scenario to show, the local asset cache, no CDN, no telemetry."""
    return {
        SCENARIO_ENV: str(scenario_file),
        "SOLARA_ASSETS_PROXY": "True",
        "SOLARA_ASSETS_PROXY_CACHE_DIR": str(cache),
        "SOLARA_ASSETS_CDN": NO_CDN,
        "SOLARA_TELEMETRY_MIXPANEL_ENABLE": "False",
    }
