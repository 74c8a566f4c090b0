# chart.awk META RESULTS: a hand-written SVG for scripts/ab/run.sh. Three
# panels of grouped bars (one group per test, one bar per policy): receiver
# throughput, host CPU s/GB (vhostd + QEMU) and vhostd's own CPU s/GB. Bars
# are medians over the rounds; dots are the single runs. Plain POSIX awk.

function get(s, k,   n, a, i, p) {
  n = split(s, a, " ")
  for (i = 1; i <= n; i++) { p = index(a[i], "="); if (substr(a[i], 1, p - 1) == k) return substr(a[i], p + 1) }
  return ""
}
function median(v, cnt,   i, j, t) {
  if (cnt == 0) return ""
  for (i = 1; i <= cnt; i++) for (j = i + 1; j <= cnt; j++) if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
  return (cnt % 2) ? v[(cnt + 1) / 2] : (v[cnt / 2] + v[cnt / 2 + 1]) / 2
}
function med(t, p, k,   v, i, n) {
  n = 0
  for (i = 1; i <= nrow; i++) if (rt[i] == t && rp[i] == p && !rf[i]) v[++n] = get(row[i], k)
  return median(v, n)
}
function floor_(x) { return (x == int(x) || x >= 0) ? int(x) : int(x) - 1 }
function ceil_(x) { return (x == int(x)) ? x : floor_(x) + 1 }
function pow10(e) { return exp(e * log(10)) }
# nice_step(M): a 1/2/5 x 10^n step giving about 5 gridlines up to M.
function nice_step(m,   raw, mag, norm) {
  if (m <= 0) return 1
  raw = m / 5; mag = pow10(floor_(log(raw) / log(10))); norm = raw / mag
  return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag
}
function fmt(v, step) { return (step >= 1 ? sprintf("%.0f", v) : step >= 0.1 ? sprintf("%.1f", v) : step >= 0.01 ? sprintf("%.2f", v) : sprintf("%.3f", v)) }
# valfmt(V): a bar's value with about three significant digits.
function valfmt(v) { v += 0; return (v >= 100 ? sprintf("%.0f", v) : v >= 10 ? sprintf("%.1f", v) : sprintf("%.2f", v)) }
function xml(s) { gsub(/&/, "\\&amp;", s); gsub(/</, "\\&lt;", s); gsub(/>/, "\\&gt;", s); return s }
function testname(t) {
  if (t == "tcp4") return "TCPv4 guest→host"
  if (t == "tcp6") return "TCPv6 guest→host"
  if (t == "udp4") return "UDPv4 guest→host"
  if (t == "tcp4-rx") return "TCPv4 host→guest"
  return t
}
# panel(Y0, KEY, TITLE, VFMT): one bar chart at height Y0.
function panel(y0, key, title,   ly, maxv, ti, pi, i, m, step, top, y, g, x, bw, gw, h, v, val, lx) {
  maxv = 0
  for (i = 1; i <= nrow; i++) if (!rf[i] && get(row[i], key) + 0 > maxv) maxv = get(row[i], key) + 0
  step = nice_step(maxv); top = ceil_(maxv / step) * step; if (top <= 0) top = 1
  printf "<text x=\"%d\" y=\"%d\" class=\"pt\">%s</text>\n", PX, y0 - 10, xml(title)
  for (v = 0; v <= top + step / 1000; v += step) {
    y = y0 + PH - PH * v / top
    printf "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" class=\"grid\"/>\n", PX, y, PX + PW, y
    printf "<text x=\"%d\" y=\"%.1f\" class=\"ax\" text-anchor=\"end\">%s</text>\n", PX - 6, y + 4, fmt(v, step)
  }
  gw = PW / ntest; bw = gw * 0.72 / npol
  for (ti = 1; ti <= ntest; ti++) {
    g = PX + (ti - 1) * gw
    printf "<text x=\"%.1f\" y=\"%d\" class=\"ax\" text-anchor=\"middle\">%s</text>\n", g + gw / 2, y0 + PH + 16, xml(testname(tests[ti]))
    for (pi = 1; pi <= npol; pi++) {
      x = g + gw * 0.14 + (pi - 1) * bw
      m = med(tests[ti], pol[pi], key)
      if (m == "") continue
      h = PH * m / top
      printf "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>%s %s: median %s</title></rect>\n", x + 1, y0 + PH - h, bw - 2, h, color[pol[pi]], xml(testname(tests[ti])), pol[pi], valfmt(m)
      ly = y0 + PH - h   # the label sits above the bar and above its highest dot
      for (i = 1; i <= nrow; i++) if (rt[i] == tests[ti] && rp[i] == pol[pi] && !rf[i]) {
        val = get(row[i], key) + 0
        printf "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" class=\"dot\"/>\n", x + bw / 2, y0 + PH - PH * val / top
        if (y0 + PH - PH * val / top < ly) ly = y0 + PH - PH * val / top
      }
      printf "<text x=\"%.1f\" y=\"%.1f\" class=\"val\" text-anchor=\"middle\">%s</text>\n", x + bw / 2, ly - 5, valfmt(m)
    }
  }
  printf "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" class=\"axis\"/>\n", PX, y0 + PH, PX + PW, y0 + PH
}

FNR == NR { p = index($0, "="); meta[substr($0, 1, p - 1)] = substr($0, p + 1); next }
/^ROW / {
  nrow++; row[nrow] = $0; rt[nrow] = get($0, "test"); rp[nrow] = get($0, "policy"); rf[nrow] = (get($0, "failed") != "")
  if (!(rt[nrow] in tseen)) { tseen[rt[nrow]] = 1; tests[++ntest] = rt[nrow] }
}
END {
  npol = split("defer software auto", pol, " ")
  color["defer"] = "#4e79a7"; color["software"] = "#e15759"; color["auto"] = "#59a14f"
  W = 960; PX = 70; PW = W - PX - 30; PH = 190; GAP = 80; TOP = 80
  H = TOP + 3 * (PH + GAP) + 10
  printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\">\n", W, H, W, H
  print "<style>.t{font-size:17px;font-weight:bold}.st{font-size:12px;fill:#444}.pt{font-size:14px;font-weight:bold}.ax{font-size:12px;fill:#333}.val{font-size:11px;fill:#111}.grid{stroke:#ddd;stroke-width:1}.axis{stroke:#333;stroke-width:1}.dot{fill:#111;fill-opacity:.55}</style>"
  printf "<rect width=\"%d\" height=\"%d\" fill=\"#fff\"/>\n", W, H
  printf "<text x=\"%d\" y=\"26\" class=\"t\">vhostd GSO policies on a real guest: defer vs software vs auto (--gso-max-size %s)</text>\n", PX, xml(meta["gso_max_size"])
  printf "<text x=\"%d\" y=\"46\" class=\"st\">%s · %s CPUs %s · kernel %s · guest %s, %s vCPU · %s rounds x %s s · load %s→%s</text>\n", PX,
    xml(meta["date"]), xml(meta["nproc"]), xml(meta["cpu"]), xml(meta["kernel"]), xml(meta["accel"]), xml(meta["vcpus"]), xml(meta["rounds"]), xml(meta["secs"]), xml(meta["load_start"]), xml(meta["load_end"])
  for (pi = 1; pi <= npol; pi++) {
    lx = PX + (pi - 1) * 110
    printf "<rect x=\"%d\" y=\"56\" width=\"12\" height=\"12\" fill=\"%s\"/><text x=\"%d\" y=\"67\" class=\"ax\">%s</text>\n", lx, color[pol[pi]], lx + 17, pol[pi]
  }
  printf "<text x=\"%d\" y=\"67\" class=\"ax\">bars: median of the rounds, dots: single runs</text>\n", PX + npol * 110 + 20
  panel(TOP + 20, "mbps", "Throughput at the receiver (Mbit/s, higher is better)")
  panel(TOP + 20 + PH + GAP, "spg_total", "Host CPU per GB moved: vhostd + QEMU incl. vCPUs (s/GB, lower is better)")
  panel(TOP + 20 + 2 * (PH + GAP), "spg_vhostd", "vhostd CPU per GB moved (s/GB, lower is better)")
  print "</svg>"
}
