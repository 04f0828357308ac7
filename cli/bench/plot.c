/* plot.c - writes the sweep plot as plain SVG (see plot.h). */
#include "plot.h"

#include <math.h>
#include <stdio.h>

#define W 760
#define H 460
#define LEFT 80
#define RIGHT 30
#define TOP 50
#define BOTTOM 60

/* A round axis maximum: 1, 2 or 5 times a power of ten, above v. */
static double nice_max(double v)
{
    if (v <= 0) return 1;
    double p = pow(10, floor(log10(v)));
    for (double m = 1; m <= 10; m = m < 2 ? 2 : m < 5 ? 5 : 10)
        if (m * p >= v) return m * p;
    return 10 * p;
}

static void xml_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else fputc(*s, f);
    }
}

bool plot_write(const char *path, const char *title, const struct plot_point *points,
                size_t count, double slo_ms, long best)
{
    FILE *f = fopen(path, "w");
    if (!f) return false;
    double max_x = 0, max_y = slo_ms;
    for (size_t i = 0; i < count; i++) {
        if (points[i].throughput > max_x) max_x = points[i].throughput;
        if (points[i].p99_ms > max_y) max_y = points[i].p99_ms;
    }
    max_x = nice_max(max_x * 1.05);
    max_y = nice_max(max_y * 1.05);
    double pw = W - LEFT - RIGHT, ph = H - TOP - BOTTOM;
#define X(v) (LEFT + (v) / max_x * pw)
#define Y(v) (TOP + ph - (v) / max_y * ph)
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
    fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    fprintf(f, "<text x=\"%d\" y=\"24\" font-size=\"15\">", LEFT);
    xml_text(f, title);
    fprintf(f, "</text>\n");
    for (int i = 0; i <= 5; i++) {
        double xv = max_x * i / 5, yv = max_y * i / 5;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", X(xv),
                TOP, X(xv), TOP + ph);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n", X(xv),
                TOP + ph + 18, xv);
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", LEFT,
                Y(yv), LEFT + pw, Y(yv));
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", LEFT - 6, Y(yv) + 4,
                yv);
    }
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">throughput (requests/s)</text>\n",
            LEFT + pw / 2, H - 15);
    fprintf(f, "<text transform=\"translate(20,%.1f) rotate(-90)\" text-anchor=\"middle\">"
               "latency (ms)</text>\n", TOP + ph / 2);
    static const char *const colors[2] = {"#1f77b4", "#d62728"};
    for (int series = 0; series < 2; series++) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", colors[series]);
        for (size_t i = 0; i < count; i++)
            fprintf(f, "%.1f,%.1f ", X(points[i].throughput),
                    Y(series ? points[i].p99_ms : points[i].p50_ms));
        fprintf(f, "\"/>\n");
        for (size_t i = 0; i < count; i++)
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n",
                    X(points[i].throughput), Y(series ? points[i].p99_ms : points[i].p50_ms),
                    colors[series]);
    }
    for (size_t i = 0; i < count; i++) {
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" fill=\"#555\">", X(points[i].throughput) + 4,
                Y(points[i].p99_ms) - 6);
        xml_text(f, points[i].label);
        fprintf(f, "</text>\n");
    }
    if (slo_ms > 0) {
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#2ca02c\" "
                   "stroke-dasharray=\"6,4\"/>\n", LEFT, Y(slo_ms), LEFT + pw, Y(slo_ms));
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" fill=\"#2ca02c\">SLO p99 %g ms</text>\n",
                LEFT + pw, Y(slo_ms) - 5, slo_ms);
        if (best >= 0)
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"8\" fill=\"none\" stroke=\"#2ca02c\" "
                       "stroke-width=\"2\"/>\n", X(points[best].throughput), Y(points[best].p99_ms));
    }
    fprintf(f, "<rect x=\"%d\" y=\"34\" width=\"10\" height=\"10\" fill=\"%s\"/><text x=\"%d\" y=\"43\">p50</text>\n",
            W - 180, colors[0], W - 165);
    fprintf(f, "<rect x=\"%d\" y=\"34\" width=\"10\" height=\"10\" fill=\"%s\"/><text x=\"%d\" y=\"43\">p99</text>\n",
            W - 120, colors[1], W - 105);
    fprintf(f, "</svg>\n");
    return fclose(f) == 0;
}
