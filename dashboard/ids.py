"""Component ids, one named constant each, shared by the layout and the callbacks."""

ROOT = "viz-root"
URL = "viz-url"  # the page's location: ?embed=1 hides the header card (dashboard/embed.py)

# header
HEADER = "viz-header"
STATUS_BADGE = "viz-status-badge"
EMBED_STATUS = "viz-embed-status"  # the badge's copy in the controls row, shown in embed mode
EMBED_BADGE = "viz-embed-badge"

# controls
REFRESH_BUTTON = "viz-refresh-button"
PAUSE_BUTTON = "viz-pause-button"
CLEAR_BUTTON = "viz-clear-button"
CLEAR_CONFIRM = "viz-clear-confirm"
INTERVAL_SELECT = "viz-interval-select"
INTERVAL = "viz-interval"

# stat boxes, one per space
STAT_LATENT = "viz-stat-latent"
STAT_LORA = "viz-stat-lora"
STAT_PROMPT = "viz-stat-prompt"
STAT_IDS = {"latent": STAT_LATENT, "lora": STAT_LORA, "prompt": STAT_PROMPT}

# the figure
GRAPH = "viz-graph"

# browser-side memory
VERSION_STORE = "viz-version-store"  # {"run": str|None, "version": int|None}
STATUS_STORE = "viz-status-store"  # {"state": str, "detail": str}

# guide
GUIDE = "viz-guide"
