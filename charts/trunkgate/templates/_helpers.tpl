{{/* Name prefix of every object. */}}
{{- define "trunkgate.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "trunkgate.snapshotSecret" -}}
{{- default (printf "%s-edge-config" (include "trunkgate.fullname" .)) .Values.snapshotSecretName -}}
{{- end -}}

{{/* The snapshot's Secrets as a YAML flow list: the head, then its parts 1..snapshotMaxParts-1. */}}
{{- define "trunkgate.snapshotParts" -}}
{{- $head := include "trunkgate.snapshotSecret" . -}}
{{- $n := int .Values.snapshotMaxParts -}}
{{- if or (lt $n 1) (gt $n 64) -}}
{{- fail (printf "snapshotMaxParts must be 1 to 64, got %v" .Values.snapshotMaxParts) -}}
{{- end -}}
{{- $names := list -}}
{{- range $i := untilStep 1 $n 1 -}}
{{- $names = append $names (printf "%s-part-%d" $head $i | quote) -}}
{{- end -}}
[{{ join ", " $names }}]
{{- end -}}

{{- define "trunkgate.leaseName" -}}
{{- default (printf "%s-operator" (include "trunkgate.fullname" .)) .Values.operator.leaderElection.leaseName -}}
{{- end -}}

{{- define "trunkgate.operator.name" -}}
{{- printf "%s-operator" (include "trunkgate.fullname" .) -}}
{{- end -}}

{{- define "trunkgate.edge.name" -}}
{{- printf "%s-edge" (include "trunkgate.fullname" .) -}}
{{- end -}}

{{/* Labels of every object; call with (dict "root" $ "component" "edge"). */}}
{{- define "trunkgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{ include "trunkgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: trunkgate
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "trunkgate.selectorLabels" -}}
app.kubernetes.io/name: trunkgate
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{- define "trunkgate.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* Public addresses carriers must allow, as a list. */}}
{{- define "trunkgate.edgeAddresses" -}}
{{- $a := .Values.edgeEndpoint.addresses -}}
{{- if and (not $a) (eq .Values.edge.mode "statefulset") -}}
{{- $a = .Values.edge.loadBalancer.ips -}}
{{- end -}}
{{- join "," $a -}}
{{- end -}}

{{/* "true" when some edge port is privileged (< 1024). */}}
{{/* The last RTP port: edge.rtpPorts.high, or by mode when 0 (daemonset: low + 9999, the edge's
own default range; statefulset: low + 99, every port being a LoadBalancer Service port). */}}
{{- define "trunkgate.edge.rtpHigh" -}}
{{- $e := .Values.edge -}}
{{- if gt (int $e.rtpPorts.high) 0 -}}
{{- int $e.rtpPorts.high -}}
{{- else if eq $e.mode "statefulset" -}}
{{- min 65535 (add (int $e.rtpPorts.low) 99) -}}
{{- else -}}
{{- min 65535 (add (int $e.rtpPorts.low) 9999) -}}
{{- end -}}
{{- end -}}

{{/* The edge's admin address without the port: edge.adminAddress, else the pod's own address
($(POD_IP), or $(HOST_IP) in daemonset mode, from the downward API). Never 0.0.0.0 by default. */}}
{{- define "trunkgate.edge.adminHost" -}}
{{- $e := .Values.edge -}}
{{- if $e.adminAddress -}}
{{- if contains ":" $e.adminAddress -}}[{{ $e.adminAddress }}]{{- else -}}{{ $e.adminAddress }}{{- end -}}
{{- else -}}
{{- ternary "$(POD_IP)" "$(HOST_IP)" (eq $e.mode "statefulset") -}}
{{- end -}}
{{- end -}}

{{/* "true" when the admin endpoint is on loopback (the probes must then ask that address). */}}
{{- define "trunkgate.edge.adminLoopback" -}}
{{- if or (hasPrefix "127." .Values.edge.adminAddress) (eq .Values.edge.adminAddress "::1") -}}
true
{{- end -}}
{{- end -}}

{{- define "trunkgate.edge.lowPort" -}}
{{- $e := .Values.edge -}}
{{- $sips := and $e.tls.secretName (or (and (gt (int $e.tls.publicSipsPort) 0) (lt (int $e.tls.publicSipsPort) 1024)) (and (gt (int $e.tls.internalSipsPort) 0) (lt (int $e.tls.internalSipsPort) 1024))) -}}
{{- if or (lt (int $e.publicSipPort) 1024) (lt (int $e.internalSipPort) 1024) (lt (int $e.rtpPorts.low) 1024) (lt (int $e.adminPort) 1024) $sips -}}
true
{{- end -}}
{{- end -}}

{{/* The container security context shared by both binaries; pass (dict "addBind" bool). */}}
{{- define "trunkgate.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
{{- if .fastPath }}
# edge.kernelFastPath: the RTP fast path loads a BPF program and attaches it to the node's
# interfaces (CAP_BPF, CAP_NET_ADMIN). Kubernetes gives added capabilities to uid 0 only (no
# ambient capabilities), so the edge runs as uid 0 with every other capability dropped.
runAsNonRoot: false
runAsUser: 0
runAsGroup: 65532
capabilities:
  drop: [ALL]
  add: [BPF, NET_ADMIN{{ if .addBind }}, NET_BIND_SERVICE{{ end }}]
{{- else }}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: [ALL]
  {{- if .addBind }}
  # A port below 1024 is configured. Note that Kubernetes grants no ambient capabilities, so for
  # a non-root process this only helps where the runtime passes it on; statefulset mode also sets
  # the namespaced sysctl net.ipv4.ip_unprivileged_port_start, which always works.
  add: [NET_BIND_SERVICE]
  {{- end }}
{{- end }}
{{- end -}}

{{- define "trunkgate.podSecurityContext" -}}
runAsNonRoot: {{ not .root }}
runAsUser: {{ ternary 0 65532 .root }}
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The edge's --platform-cidrs: edge.platformCidrs, else the pod networks (nodes' podCIDRs) and
the Service network (ServiceCIDR "kubernetes") the chart can read from the cluster plus the private
ranges (CNIs that ignore podCIDRs use them); in daemonset mode the node's own address too (packets
from outside never carry a local source address: the kernel drops them as martians). */}}
{{- define "trunkgate.edge.platformCidrs" -}}
{{- $e := .Values.edge -}}
{{- $nets := list -}}
{{- if $e.platformCidrs -}}
{{- $nets = $e.platformCidrs -}}
{{- else -}}
{{- range $n := ((lookup "v1" "Node" "" "").items | default list) -}}
{{- range $c := ($n.spec.podCIDRs | default list) -}}
{{- $nets = append $nets $c -}}
{{- end -}}
{{- end -}}
{{- $sc := lookup "networking.k8s.io/v1" "ServiceCIDR" "" "kubernetes" -}}
{{- if $sc -}}
{{- range $c := ($sc.spec.cidrs | default list) -}}
{{- $nets = append $nets $c -}}
{{- end -}}
{{- end -}}
{{- $nets = concat $nets (list "10.0.0.0/8" "172.16.0.0/12" "192.168.0.0/16" "fd00::/8") -}}
{{- end -}}
{{- if ne $e.mode "statefulset" -}}
{{- $nets = append $nets "$(HOST_IP)" -}}
{{- end -}}
{{- join "," (uniq $nets) -}}
{{- end -}}

{{/* daemonset mode with edge.daemonset.publicNetwork: carrier-side binds are "NETWORK:PORT", the
edge's own address in that network; else the pod's address. Call with (dict "root" . "port" N). */}}
{{- define "trunkgate.edge.publicBind" -}}
{{- $e := .root.Values.edge -}}
{{- $net := $e.daemonset.publicNetwork -}}
{{- if and (ne $e.mode "statefulset") $net -}}
{{- if contains ":" $net -}}[{{ $net }}]:{{ .port }}{{- else -}}{{ $net }}:{{ .port }}{{- end -}}
{{- else -}}
{{ ternary "$(POD_IP)" "$(HOST_IP)" (eq $e.mode "statefulset") }}:{{ .port }}
{{- end -}}
{{- end -}}

{{- define "trunkgate.redis.name" -}}
{{- printf "%s-redis" (include "trunkgate.fullname" .) -}}
{{- end -}}

{{/* "true" when the chart runs its lab Redis: edge.stateStore.deploy and no edge.stateStore.url. */}}
{{- define "trunkgate.redis.enabled" -}}
{{- $s := .Values.edge.stateStore -}}
{{- if and $s.deploy (not $s.url) -}}
true
{{- end -}}
{{- end -}}

{{/* The edge's --state-store: edge.stateStore.url, else the lab Redis (by its pinned ClusterIP,
else its Service's DNS name), else empty (the edge journals its calls in the pod). */}}
{{- define "trunkgate.stateStore.url" -}}
{{- $s := .Values.edge.stateStore -}}
{{- if $s.url -}}
{{- $s.url -}}
{{- else if eq (include "trunkgate.redis.enabled" .) "true" -}}
redis://{{ default (printf "%s.%s.svc" (include "trunkgate.redis.name" .) .Release.Namespace) $s.redis.clusterIP }}:6379
{{- end -}}
{{- end -}}
