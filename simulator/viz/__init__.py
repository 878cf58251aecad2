"""The live dashboard (`attnsim viz`): a Mesa SolaraViz page over `AttentionMarket`, served offline.

`assets` finds the JavaScript and CSS the page needs in the local asset cache (no solara import);
`dashboard` is the page itself and needs the `[viz]` extra.
"""
