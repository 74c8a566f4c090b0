// Package deploy holds no code: it is where the deployment files live
// (kubernetes/, grafana/, prometheus/), and its tests check them: the
// Kubernetes manifests decode strictly into the API types and agree with
// the vhostd-cni plugin, the alert rules pass promtool, and every metric the
// dashboard and the rules use is in a live vhostd's /metrics.
package deploy
