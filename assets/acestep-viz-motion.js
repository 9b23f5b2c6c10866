/*
 * acestep-viz: when a new fit moves the live map's points, they glide to their new place (about 400 ms)
 * instead of jumping. Plotly's layout.transition does not animate WebGL (scattergl) traces, so this wraps
 * Plotly.react for the dashboard's graph: the new figure is first drawn with every known point where it
 * was, then its coordinates are stepped to the new ones with Plotly.restyle, then the figure exactly as
 * the server sent it is drawn. A point is known by its hover label (clip, step, layer, prompt: the
 * fields a refit does not change); points that are new appear at their place at once.
 * Only figures the server marks with layout.meta.animate move (a poll of the live map of the same run);
 * a colour change, a filter, a selection or a scrub of the history are drawn at once, and so is
 * everything when the user prefers reduced motion.
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

    function keys(texts, n) {  // one key per point: its hover label, numbered where labels repeat
        var seen = new Map(), out = new Array(n);
        for (var i = 0; i < n; i++) {
            var text = texts && texts[i] !== undefined ? String(texts[i]) : '';
            var count = seen.get(text) || 0;
            seen.set(text, count + 1);
            out[i] = text + '\u0000' + count;
        }
        return out;
    }

    function tracePath(old, next) {  // {from, to} coordinates of one trace's points, or null when none moves
        var toX = numbers(next.x), toY = numbers(next.y), n = toX.length;
        var oldX = old.x || [], oldY = old.y || [];
        var where = new Map(), oldKeys = keys(old.text, oldX.length);
        for (var k = 0; k < oldKeys.length; k++) where.set(oldKeys[k], k);
        var newKeys = keys(next.text, n), fromX = new Float64Array(n), fromY = new Float64Array(n), moved = false;
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
        if (!meta || !meta.animate || !shown || shown.run !== meta.run || reducedMotion()) return null;
        var old = gd._fullData, data = figure.data;
        if (!old || !data || old.length < POINT_TRACES || data.length < POINT_TRACES) return null;
        var paths = [], any = false;
        for (var t = 0; t < POINT_TRACES; t++) {
            paths.push(tracePath(old[t], data[t]));
            any = any || paths[t] !== null;
        }
        return any ? paths : null;
    }

    function at(paths, share, figure) {  // the point traces' coordinates a share of the way
        var xs = [], ys = [];
        for (var t = 0; t < POINT_TRACES; t++) {
            var p = paths[t];
            if (!p) { xs.push(numbers(figure.data[t].x)); ys.push(numbers(figure.data[t].y)); continue; }
            var n = p.toX.length, x = new Float64Array(n), y = new Float64Array(n);
            for (var i = 0; i < n; i++) {
                x[i] = p.fromX[i] + (p.toX[i] - p.fromX[i]) * share;
                y[i] = p.fromY[i] + (p.toY[i] - p.fromY[i]) * share;
            }
            xs.push(x);
            ys.push(y);
        }
        return {x: xs, y: ys};
    }

    function withCoordinates(figure, coords) {
        var data = figure.data.map(function (trace, t) {
            return t < POINT_TRACES ? Object.assign({}, trace, {x: coords.x[t], y: coords.y[t]}) : trace;
        });
        return Object.assign({}, figure, {data: data});
    }

    function ease(share) {  // slow out, slow in
        return share < 0.5 ? 4 * share * share * share : 1 - Math.pow(-2 * share + 2, 3) / 2;
    }

    function install(Plotly) {
        var react = Plotly.react;
        Plotly.react = function (gd, figure) {
            if (running && running.gd === gd) running.cancelled = true;
            var ours = gd && gd.closest && gd.closest('#' + GRAPH_ID) && arguments.length === 2;
            var paths = ours ? plan(gd, figure) : null;
            if (!paths) return react.apply(this, arguments);
            var self = this, motion = {gd: gd, cancelled: false};
            running = motion;
            var drawn = react.call(self, gd, withCoordinates(figure, at(paths, 0, figure)));
            drawn.then(function () {
                var started = performance.now(), steps = 0;
                function step() {
                    if (motion.cancelled) return;
                    // by the clock, but in at least MIN_STEPS steps: a slow machine shows motion, not a jump
                    steps += 1;
                    var share = Math.min((performance.now() - started) / DURATION_MS, steps / (MIN_STEPS + 1));
                    if (steps > MIN_STEPS && share >= 1) {
                        if (running === motion) running = null;
                        react.call(self, gd, figure);
                        return;
                    }
                    var coords = at(paths, ease(Math.min(1, share)), figure);
                    Plotly.restyle(gd, {x: coords.x, y: coords.y}, [0, 1, 2]).then(function () {
                        window.requestAnimationFrame(step);
                    });
                }
                window.requestAnimationFrame(step);
            });
            return drawn;
        };
    }

    (function waitForPlotly() {
        if (window.Plotly && window.Plotly.react) install(window.Plotly);
        else window.setTimeout(waitForPlotly, 20);
    })();
})();
