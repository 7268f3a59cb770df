// The plotly.js traces pocklib draws (scatter is always in core), for offline HTML.
'use strict';
var Plotly = require('plotly.js/lib/core');
Plotly.register([
    require('plotly.js/lib/bar'),
    require('plotly.js/lib/heatmap'),
    require('plotly.js/lib/candlestick'),
]);
module.exports = Plotly;
