/*
 * acestep-viz: the live embeddings tab. Added by `acestep-viz acetrainer install`,
 * removed by `acestep-viz acetrainer uninstall`.
 *
 * The dashboard loads into the iframe the first time the tab is shown (clicked or switched to by
 * switchTab), so ACETrainer opens as fast as before. Without a configured URL it is this page's
 * host on the dashboard port, so the tab also works when ACETrainer is opened from another machine.
 */
(function () {
    'use strict';

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

    function setUp(panel) {
        var frame = panel.querySelector('iframe[data-acestep-viz-frame]');
        var link = panel.querySelector('a[data-acestep-viz-open]');
        var url = dashboardUrl(panel);
        link.href = url.href;
        function loadOnce() {
            if (!frame.getAttribute('src') && shown(panel)) frame.src = embedded(url);
        }
        new MutationObserver(loadOnce).observe(panel, {attributes: true, attributeFilter: ['style', 'class']});
        loadOnce();
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
