/*
 * acestep-viz: when a new fit moves the live map's points, they glide to their new place (about 400 ms)
 * instead of jumping. Plotly's layout.transition does not animate WebGL (scattergl) traces, so this wraps
 * Plotly.react for the dashboard's graph: the new figure is drawn once, as the server sent it, and its
 * WebGL points are then stepped from where they were to their place (Plotly redraws nothing else, so a
 * step costs milliseconds even at 3 x 50k points). A point is known by its hover label (clip, step, layer,
 * prompt: the fields a refit does not change); points that are new appear at their place at once.
 * Points move only from one version of a run's live map to the next (layout.meta: run, version, live);
 * a colour, filter or selection change (same version), a scrub of the history and the way back to Live
 * are drawn at once, and so is everything when the user prefers reduced motion or clips are selected.
 */
(function () {
    'use strict';

    var GRAPH_ID = 'viz-graph';
    var POINT_TRACES = 3;  // traces 0-2 are the three panels' points; trajectories follow them
    var DURATION_MS = 400;
    var MIN_STEPS = 2;
    var running = null;  // {gd, cancelled}: the motion under way

    function reducedMotion() {
        return Boolean(window.matchMedia && window.matchMedia('(prefers-reduced-motion: reduce)').matches);
    }

    function numbers(column) {  // a data column as numbers: a list, a typed array or a base64 typed-array spec
        if (!column) return [];
        if (column.bdata === undefined) return column;
        var bytes = Uint8Array.from(window.atob(column.bdata), function (c) { return c.charCodeAt(0); });
        var types = {f4: Float32Array, f8: Float64Array, i4: Int32Array, i2: Int16Array, u1: Uint8Array};
        var Type = types[column.dtype];
        return Type ? new Type(bytes.buffer) : [];
    }

    function keys(trace, n) {  // one key per point: its id and hover text, numbered where those repeat
        var seen = new Map(), out = new Array(n), ids = trace.customdata, texts = trace.text;
        for (var i = 0; i < n; i++) {
            var text = (ids && ids[i] !== undefined ? String(ids[i]) : '') + '\u0001' +
                (texts && texts[i] !== undefined ? String(texts[i]) : '');
            var count = seen.get(text) || 0;
            seen.set(text, count + 1);
            out[i] = text + '\u0000' + count;
        }
        return out;
    }

    function tracePath(old, next) {  // {from, to} coordinates of one trace's points, or null when none moves
        var toX = numbers(next.x), toY = numbers(next.y), n = toX.length;
        var oldX = old.x || [], oldY = old.y || [];
        var where = new Map(), oldKeys = keys(old, oldX.length);
        for (var k = 0; k < oldKeys.length; k++) where.set(oldKeys[k], k);
        var newKeys = keys(next, n), fromX = new Float64Array(n), fromY = new Float64Array(n), moved = false;
        for (var i = 0; i < n; i++) {
            var at = where.get(newKeys[i]);
            var known = at !== undefined && isFinite(oldX[at]) && isFinite(oldY[at]);
            fromX[i] = known ? oldX[at] : toX[i];
            fromY[i] = known ? oldY[at] : toY[i];
            if (fromX[i] !== toX[i] || fromY[i] !== toY[i]) moved = moved || (isFinite(toX[i]) && isFinite(toY[i]));
        }
        return moved ? {fromX: fromX, fromY: fromY, toX: toX, toY: toY} : null;
    }

    function plan(gd, figure) {  // the paths of the point traces, or null when nothing should move
        var meta = figure && figure.layout && figure.layout.meta;
        var shown = gd.layout && gd.layout.meta;
        if (!meta || !shown || !meta.live || !shown.live || shown.run !== meta.run || shown.version === meta.version ||
            reducedMotion()) return null;
        var old = gd._fullData, data = figure.data;
        if (!old || !data || old.length < POINT_TRACES || data.length < POINT_TRACES) return null;
        var paths = [], any = false;
        for (var t = 0; t < POINT_TRACES; t++) {
            paths.push(tracePath(old[t], data[t]));
            any = any || paths[t] !== null;
        }
        return any ? paths : null;
    }

    function ease(share) {  // slow out, slow in
        return share < 0.5 ? 4 * share * share * share : 1 - Math.pow(-2 * share + 2, 3) / 2;
    }

    // The WebGL layer of trace t's subplot (Plotly's scattergl scene: markerOptions[0] holds the positions
    // of the subplot's first trace, the panel's points, as x0, y0, x1, y1, ...), or null when it is not
    // there as expected or a selection is shown (the selected points are a second layer): then no motion.
    function layer(gd, t, path) {
        var trace = gd._fullData[t], plots = gd._fullLayout && gd._fullLayout._plots;
        var subplot = plots && plots[(trace.xaxis || 'x') + (trace.yaxis || 'y')];
        var scene = subplot && subplot._scene;
        var options = scene && scene.markerOptions && scene.markerOptions[0];
        if (!options || !scene.scatter2d || !options.positions || options.positions.length !== 2 * path.toX.length) {
            return null;
        }
        if ((scene.selectBatch[0] || []).length || (scene.unselectBatch[0] || []).length) return null;
        return {scene: scene, path: path, to: options.positions, now: new Float64Array(options.positions.length)};
    }

    function show(layers, share) {
        layers.forEach(function (l) {
            var n = l.path.toX.length;
            for (var i = 0; i < n; i++) {
                l.now[2 * i] = l.path.fromX[i] + (l.to[2 * i] - l.path.fromX[i]) * share;
                l.now[2 * i + 1] = l.path.fromY[i] + (l.to[2 * i + 1] - l.path.fromY[i]) * share;
            }
            l.scene.markerOptions[0].positions = share >= 1 ? l.to : l.now;
            l.scene.scatter2d.update(l.scene.markerOptions);
            l.scene.draw();
        });
    }

    // The new figure is drawn once, as sent; before the browser paints it, its WebGL points are put back
    // where they were and then stepped to their place, without Plotly redrawing anything else.
    function move(gd, paths, motion) {
        var layers = [];
        for (var t = 0; t < POINT_TRACES; t++) {
            if (!paths[t]) continue;
            var l = layer(gd, t, paths[t]);
            if (!l) return;
            layers.push(l);
        }
        show(layers, 0);
        var started = performance.now(), steps = 0;
        function step() {
            if (motion.cancelled) return;  // a newer figure was drawn over these points
            // by the clock, but in at least MIN_STEPS steps: a slow machine shows motion, not a jump
            steps += 1;
            var share = Math.min((performance.now() - started) / DURATION_MS, steps / (MIN_STEPS + 1));
            var done = steps > MIN_STEPS && share >= 1;
            show(layers, done ? 1 : ease(share));
            if (done) {
                if (running === motion) running = null;
            } else {
                window.requestAnimationFrame(step);
            }
        }
        window.requestAnimationFrame(step);
    }

    function install(Plotly) {
        var react = Plotly.react;
        Plotly.react = function (gd, figure) {
            if (running && running.gd === gd) running.cancelled = true;
            var ours = gd && gd.closest && gd.closest('#' + GRAPH_ID) && arguments.length === 2;
            var paths = ours ? plan(gd, figure) : null;
            var drawn = react.apply(this, arguments);
            if (!paths) return drawn;
            var motion = {gd: gd, cancelled: false};
            running = motion;
            return drawn.then(function (result) {
                if (!motion.cancelled) move(gd, paths, motion);
                return result;
            });
        };
    }

    (function waitForPlotly() {
        if (window.Plotly && window.Plotly.react) install(window.Plotly);
        else window.setTimeout(waitForPlotly, 20);
    })();
})();
