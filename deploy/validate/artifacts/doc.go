// Package artifacts holds no code: it is the home of the tests that keep
// the deployment files of ct-exporter honest. The files themselves live in
// the repository:
//   - deploy/systemd/ct-exporter.service: a hardened unit that runs the
//     exporter as a transient non-root user with CAP_NET_ADMIN only, with
//     its flags in deploy/systemd/ct-exporter.env and the recommended
//     conntrack sysctls in deploy/systemd/90-ct-exporter.conf, and the
//     opt-in drop-in deploy/systemd/netns.conf for other network namespaces;
//   - deploy/kubernetes/: a kustomization with a DaemonSet, a headless
//     Service and a PodMonitor, and the opt-in overlay
//     deploy/kubernetes/netns for pod namespaces;
//   - Dockerfile: the multi-stage container image build.
//
// The tests check the unit's systemd-analyze exposure score and verify it,
// run the exporter with exactly the privileges the unit grants and without
// them, decode the manifests strictly into the Kubernetes and Prometheus
// Operator API types, lint the Dockerfile parsed with BuildKit's parser and
// run the go build command it contains. docs/INSTALL.md describes each way
// to install.
package artifacts
