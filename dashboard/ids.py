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
DELETE_RUN_BUTTON = "viz-delete-run-button"
DELETE_RUN_CONFIRM = "viz-delete-run-confirm"
DELETE_RUN_TARGET = "viz-delete-run-target"  # the run the open confirmation names
DELETE_RUN_MESSAGE = "viz-delete-run-message"
INTERVAL_SELECT = "viz-interval-select"
INTERVAL = "viz-interval"
UPDATES_HIDDEN = "viz-updates-hidden"  # set by assets/acestep-viz-visibility.js: nobody can see the page

# stat boxes, one per space
STAT_LATENT = "viz-stat-latent"
STAT_LORA = "viz-stat-lora"
STAT_PROMPT = "viz-stat-prompt"
STAT_IDS = {"latent": STAT_LATENT, "lora": STAT_LORA, "prompt": STAT_PROMPT}
STAT_LABEL_PROMPT = "viz-stat-label-prompt"  # "Prompt Space", or "Condition Space" for an ACE-Step 1.5 run

# the figure
GRAPH = "viz-graph"

# browser-side memory
VERSION_STORE = "viz-version-store"  # {"run": str|None, "version": int|None}
STATUS_STORE = "viz-status-store"  # {"state": str, "detail": str}

# guide
GUIDE = "viz-guide"

# run and view controls
RUN_SELECT = "viz-run-select"  # value None: follow the most recently active run
COMPARE_SELECT = "viz-compare-select"  # "Compare with": a second run; empty: no comparison
COMPARE_SEEN = "viz-compare-seen"  # {"runs": [shown, compared], "version", "current"} of the joint LoRA map drawn
COLOUR_SELECTS = {"latent": "viz-colour-latent", "lora": "viz-colour-lora", "prompt": "viz-colour-prompt"}
LAYER_FILTER = "viz-layer-filter"  # LoRA layers to show; empty: all layers mixed
TAG_SELECT = "viz-tag-select"  # the prompt tag "Prompt tag" colours by; None: the most common
TRAJECTORY_TOGGLE = "viz-trajectory-toggle"
CLEAR_SELECTION_BUTTON = "viz-clear-selection"

# staleness line ("last frame: step 1234, 3 s ago"), rendered in the browser every second
STALENESS = "viz-staleness"
STALENESS_STORE = "viz-staleness-store"  # {"step": int, "last_seen": epoch seconds | None}
CLOCK = "viz-clock"

# step scrubber over the frame history
SCRUBBER = "viz-scrubber"  # value: index into the history's steps; the last position is "Live"
SCRUBBER_LABEL = "viz-scrubber-label"
SCRUB_STEP_STORE = "viz-scrub-step-store"  # the training step the scrubber shows; None: Live
PLAY_BUTTON = "viz-play-button"
PLAY_INTERVAL = "viz-play-interval"
HISTORY_STORE = "viz-history-store"  # {"run", "steps": [...], "frames": {space: [[version, step], ...]}, "quality"}


# linked selection
SELECTION_STORE = "viz-selection-store"  # sorted list of selected clip ids
DETAILS = "viz-details"

# quality figures over steps
QUALITY_GRAPH = "viz-quality-graph"
HEALTH_GRAPH = "viz-health-graph"  # effective rank, CKA to first, tag silhouette (dashboard/health_charts.py)

# the adapter's update size and the alerts (dashboard/adapter_callbacks.py)
ADAPTER_GRAPH = "viz-adapter-graph"
ADAPTER_SEEN = "viz-adapter-seen"  # what the chart and alerts were last drawn from, to skip a redraw
ALERTS = "viz-alerts"  # the status area's alert list
COMPARE_RUN = "viz-compare-run"  # a second run to overlay; None: none

# exports
EXPORT_BUTTONS = {"npz": "viz-export-npz", "tensorboard": "viz-export-tensorboard", "html": "viz-export-html",
                  "gif": "viz-export-gif"}
EXPORT_DOWNLOAD = "viz-export-download"
EXPORT_MESSAGE = "viz-export-message"
