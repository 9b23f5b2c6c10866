/*
 * acestep-viz: the live embeddings tab. Added by `acestep-viz acetrainer install`,
 * removed by `acestep-viz acetrainer uninstall`.
 *
 * The dashboard loads into the iframe the first time the tab is shown (clicked or switched to by
 * switchTab), so ACETrainer opens as fast as before. Without a configured URL it is this page's
 * host on the dashboard port, so the tab also works when ACETrainer is opened from another machine.
 * While the tab is shown, a status line asks the dashboard's api/status whether the sidecar runs and
 * says how to start it when it does not. While the tab is hidden nothing polls: the status check
 * stops and the dashboard in the frame is told to pause its updates (a postMessage it listens for).
 */
(function () {
    'use strict';

    var STATUS_EVERY_MS = 5000;
    var START_HINT = 'start it with `acestep-viz up`, or set ACESTEP_VIZ_AUTOSTART=1 before training';

    function dashboardUrl(panel) {
        var configured = panel.getAttribute('data-acestep-viz-url');
        if (configured) return new URL(configured, location.href);
        var port = panel.getAttribute('data-acestep-viz-port');
        return new URL(location.protocol + '//' + location.hostname + ':' + port + '/');
    }

    function embedded(url) {
        var copy = new URL(url.href);
        copy.searchParams.set('embed', '1');
        return copy.href;
    }

    function shown(panel) {
        return window.getComputedStyle(panel).display !== 'none';
    }

    function describe(stats) {
        var runs = Object.keys(stats.runs || {});
        if (stats.warming_up) return 'Sidecar up: the collector is warming up (compiling PaCMAP).';
        if (!runs.length) return 'Sidecar up: waiting for a training run to send embeddings.';
        return 'Sidecar up: ' + runs.length + (runs.length === 1 ? ' run' : ' runs') + ', ' +
            (stats.frames_accepted || 0) + ' frames received.';
    }

    function checkStatus(url, line) {
        var api = new URL('api/status', url.href);
        fetch(api.href, {cache: 'no-store', credentials: 'omit'}).then(function (reply) {
            return reply.json().catch(function () { return {}; }).then(function (body) {
                if (reply.ok) {
                    line.textContent = describe(body);
                    line.setAttribute('data-acestep-viz-state', 'up');
                } else if (reply.status === 503) {
                    line.textContent = 'The dashboard runs but its collector does not answer: ' + START_HINT + '.';
                    line.setAttribute('data-acestep-viz-state', 'collector-down');
                } else {
                    line.textContent = 'The dashboard answered ' + reply.status + ' (' + (body.error || 'no details') +
                        '). Open it in a new window to see why.';
                    line.setAttribute('data-acestep-viz-state', 'error');
                }
            });
        }).catch(function () {
            line.textContent = 'The sidecar is not running at ' + url.host + ': ' + START_HINT + '.';
            line.setAttribute('data-acestep-viz-state', 'down');
        });
    }

    function setUp(panel) {
        var frame = panel.querySelector('iframe[data-acestep-viz-frame]');
        var link = panel.querySelector('a[data-acestep-viz-open]');
        var line = panel.querySelector('[data-acestep-viz-status]');
        var url = dashboardUrl(panel);
        var timer = null;
        link.href = url.href;

        function tellFrame(visible) {
            if (frame.contentWindow && frame.getAttribute('src')) {
                frame.contentWindow.postMessage({acestepViz: 'visibility', visible: visible}, url.origin);
            }
        }

        function update() {
            var visible = shown(panel);
            if (visible && !frame.getAttribute('src')) frame.src = embedded(url);
            if (visible && timer === null) {
                checkStatus(url, line);
                timer = window.setInterval(function () { checkStatus(url, line); }, STATUS_EVERY_MS);
            } else if (!visible && timer !== null) {
                window.clearInterval(timer);
                timer = null;
            }
            tellFrame(visible);
        }

        frame.addEventListener('load', function () { tellFrame(shown(panel)); });
        new MutationObserver(update).observe(panel, {attributes: true, attributeFilter: ['style', 'class']});
        update();
    }

    function init() {
        document.querySelectorAll('[data-acestep-viz-tab]').forEach(setUp);
    }

    if (document.readyState === 'loading') {
        document.addEventListener('DOMContentLoaded', init);
    } else {
        init();
    }
})();
