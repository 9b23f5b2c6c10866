/*
 * acestep-viz: pause the dashboard's updates while nobody can see it: when the browser tab is hidden,
 * or when the ACETrainer tab that frames this page is (it posts {acestepViz: 'visibility', visible}).
 * The flag goes to the dcc.Store "viz-updates-hidden"; a callback turns the update interval off and
 * back on (the Pause button's choice wins when shown again).
 */
(function () {
    'use strict';

    var framedHidden = false;

    function publish(triesLeft) {
        var hidden = document.hidden || framedHidden;
        try {
            window.dash_clientside.set_props('viz-updates-hidden', {data: hidden});
        } catch (notReady) {  // Dash has not rendered the store yet
            if (triesLeft > 0) window.setTimeout(function () { publish(triesLeft - 1); }, 250);
        }
    }

    window.addEventListener('message', function (event) {
        var data = event.data;
        if (event.source !== window.parent || !data || data.acestepViz !== 'visibility') return;
        framedHidden = !data.visible;
        publish(40);
    });
    document.addEventListener('visibilitychange', function () { publish(40); });
})();
