{{- /*
The edge pod template, shared by the DaemonSet and the StatefulSet. Every flag reaches the edge as
its TRUNKGATE_<FLAG> environment variable, so addresses can be composed from the downward API
with $(VAR) references.

daemonset mode: hostNetwork; the node's IP (status.hostIP) is bound and advertised on both sides,
and the admin endpoint binds it too (not 0.0.0.0: with hostNetwork that would be every interface
of the node). With edge.daemonset.publicNetwork the carrier side binds the node's address in that
network instead (the edge finds it), so platform SIP and admin stay on status.hostIP, which
carriers cannot reach.
statefulset mode: the pod binds its pod IP; towards carriers it advertises ips[ordinal] from
TRUNKGATE_ADVERTISE_IP_POOL (ordinal = the number after the last "-" of POD_NAME), never the pod
IP. No init script can work this out: the image holds the binary and its libraries only (no
shell) and the root FS is read-only.

No exec preStop hook: the image has no shell (no `sleep`). The edge drains on SIGTERM by itself
(not ready, 503 to new INVITEs, established calls run on for drainSeconds), and
terminationGracePeriodSeconds leaves it that time plus a margin. The optional preStop uses the
kubelet's own sleep action, which needs no binary in the image.
*/ -}}
{{- define "trunkgate.edge.podTemplate" -}}
{{- $e := .Values.edge -}}
{{- $sts := eq $e.mode "statefulset" -}}
{{- $low := eq (include "trunkgate.edge.lowPort" .) "true" -}}
{{- $ip := ternary "$(POD_IP)" "$(HOST_IP)" $sts -}}
{{- $adminLoopback := eq (include "trunkgate.edge.adminLoopback" .) "true" -}}
{{- $tls := $e.tls.secretName -}}
{{- $publicSips := and $tls (gt (int $e.tls.publicSipsPort) 0) -}}
{{- $internalSips := and $tls (gt (int $e.tls.internalSipsPort) 0) -}}
{{- $fast := eq (toString $e.kernelFastPath.enabled) "true" -}}
{{- $publicNet := and (not $sts) $e.daemonset.publicNetwork -}}
{{- $store := include "trunkgate.stateStore.url" . -}}
metadata:
  labels:
    {{- include "trunkgate.labels" (dict "root" $ "component" "edge") | nindent 4 }}
    {{- with $e.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $e.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "trunkgate.edge.name" . }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - name: {{ . }}
    {{- end }}
  {{- end }}
  {{- with $e.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- if not $sts }}
  hostNetwork: true
  dnsPolicy: ClusterFirstWithHostNet
  {{- end }}
  terminationGracePeriodSeconds: {{ $e.terminationGracePeriodSeconds }}
  securityContext:
    {{- include "trunkgate.podSecurityContext" (dict "root" $fast) | nindent 4 }}
    {{- if and $low $sts }}
    # A port below 1024 is configured: let the non-root edge bind it in the pod's own network
    # namespace (a "safe" sysctl; not allowed with hostNetwork, where the node must set it).
    sysctls:
      - name: net.ipv4.ip_unprivileged_port_start
        value: "0"
    {{- end }}
  containers:
    - name: edge
      image: {{ include "trunkgate.image" (dict "root" $ "image" $e.image) }}
      imagePullPolicy: {{ $e.image.pullPolicy }}
      env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- if $sts }}
        - name: POD_IP
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
        {{- else }}
        - name: HOST_IP
          valueFrom:
            fieldRef:
              fieldPath: status.hostIP
        {{- end }}
        - name: TRUNKGATE_SNAPSHOT_SECRET
          value: {{ printf "%s/%s" .Release.Namespace (include "trunkgate.snapshotSecret" .) | quote }}
        - name: TRUNKGATE_PUBLIC_SIP
          value: "{{ include "trunkgate.edge.publicBind" (dict "root" $ "port" $e.publicSipPort) }}"
        - name: TRUNKGATE_INTERNAL_SIP
          value: "{{ $ip }}:{{ $e.internalSipPort }}"
        {{- if not $publicNet }}
        - name: TRUNKGATE_PUBLIC_MEDIA_IP
          value: {{ $ip | quote }}
        {{- end }}
        # Platform-side SIP, RTP and the admin endpoint's metrics answer only these networks.
        - name: TRUNKGATE_PLATFORM_CIDRS
          value: {{ include "trunkgate.edge.platformCidrs" . | quote }}
        - name: TRUNKGATE_INTERNAL_MEDIA_IP
          value: {{ $ip | quote }}
        {{- if not $store }}
        # No shared store: calls are journalled in the pod (see the volume "state").
        - name: TRUNKGATE_STATE_DIR
          value: /var/lib/trunkgate
        {{- end }}
        {{- with $e.stateStore }}
        {{- if $store }}
        # The fleet's shared limits, lockout and call checkpoints (Redis/Valkey; with
        # edge.stateStore.deploy the chart's lab Redis).
        - name: TRUNKGATE_STATE_STORE
          value: {{ $store | quote }}
        - name: TRUNKGATE_STATE_LEASE_SECONDS
          value: {{ .leaseSeconds | quote }}
        {{- if .existingSecret }}
        - name: TRUNKGATE_STATE_STORE_PASSWORD
          valueFrom:
            secretKeyRef:
              name: {{ .existingSecret | quote }}
              key: {{ .existingSecretKey | quote }}
        {{- end }}
        {{- end }}
        {{- end }}
        {{- if $sts }}
        # Pod <name>-<i> advertises entry i towards carriers (its own LoadBalancer Service's IP).
        - name: TRUNKGATE_ADVERTISE_IP_POOL
          value: {{ join "," $e.loadBalancer.ips | quote }}
        {{- end }}
        - name: TRUNKGATE_RTP_PORTS
          value: "{{ $e.rtpPorts.low }}-{{ include "trunkgate.edge.rtpHigh" . }}"
        {{- if gt (int $e.workers) 0 }}
        - name: TRUNKGATE_WORKERS
          value: {{ $e.workers | quote }}
        {{- end }}
        # The pod's own address (the node's IP with hostNetwork), not every interface: see
        # edge.adminAddress.
        - name: TRUNKGATE_ADMIN
          value: "{{ include "trunkgate.edge.adminHost" . }}:{{ $e.adminPort }}"
        {{- with .Values.edgeEndpoint.fqdn }}
        - name: TRUNKGATE_ADVERTISE_HOST
          value: {{ . | quote }}
        {{- end }}
        {{- if $tls }}
        # From the mounted Secret; read again when the kubelet updates it.
        - name: TRUNKGATE_TLS_CERT
          value: /etc/trunkgate/tls/tls.crt
        - name: TRUNKGATE_TLS_KEY
          value: /etc/trunkgate/tls/tls.key
        {{- end }}
        {{- if $publicSips }}
        - name: TRUNKGATE_PUBLIC_SIPS
          value: "{{ include "trunkgate.edge.publicBind" (dict "root" $ "port" $e.tls.publicSipsPort) }}"
        {{- end }}
        {{- if $internalSips }}
        - name: TRUNKGATE_INTERNAL_SIPS
          value: "{{ $ip }}:{{ $e.tls.internalSipsPort }}"
        {{- end }}
        {{- if $e.tls.caSecretName }}
        - name: TRUNKGATE_TLS_CA
          value: /etc/trunkgate/tls-ca/ca.crt
        {{- end }}
        - name: TRUNKGATE_DRAIN_SECONDS
          value: {{ $e.drainSeconds | quote }}
        {{- if $fast }}
        - name: TRUNKGATE_KERNEL_FAST_PATH
          value: {{ join "," $e.kernelFastPath.interfaces | quote }}
        {{- end }}
        - name: RUST_LOG
          value: {{ $e.logFilter | quote }}
        {{- with $e.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: sip-udp
          containerPort: {{ $e.publicSipPort }}
          protocol: UDP
        - name: sip-tcp
          containerPort: {{ $e.publicSipPort }}
          protocol: TCP
        - name: internal-udp
          containerPort: {{ $e.internalSipPort }}
          protocol: UDP
        - name: internal-tcp
          containerPort: {{ $e.internalSipPort }}
          protocol: TCP
        {{- if $publicSips }}
        - name: sip-tls
          containerPort: {{ $e.tls.publicSipsPort }}
          protocol: TCP
        {{- end }}
        {{- if $internalSips }}
        - name: internal-tls
          containerPort: {{ $e.tls.internalSipsPort }}
          protocol: TCP
        {{- end }}
        - name: admin
          containerPort: {{ $e.adminPort }}
          protocol: TCP
      # /readyz fails until the first snapshot is loaded and while draining.
      readinessProbe:
        httpGet:
          path: /readyz
          port: admin
          {{- if $adminLoopback }}
          host: {{ $e.adminAddress }}
          {{- end }}
        periodSeconds: 5
        failureThreshold: 2
      livenessProbe:
        httpGet:
          path: /healthz
          port: admin
          {{- if $adminLoopback }}
          host: {{ $e.adminAddress }}
          {{- end }}
        periodSeconds: 10
        failureThreshold: 3
      {{- if gt (int $e.preStopSleepSeconds) 0 }}
      lifecycle:
        preStop:
          sleep:
            seconds: {{ $e.preStopSleepSeconds }}
      {{- end }}
      resources:
        {{- toYaml $e.resources | nindent 8 }}
      securityContext:
        {{- include "trunkgate.containerSecurityContext" (dict "addBind" $low "fastPath" $fast) | nindent 8 }}
      {{- $journal := not $store }}
      {{- if or $journal $tls $e.tls.caSecretName $fast }}
      volumeMounts:
        {{- if $fast }}
        # The node's bpffs: the fast path pins its stream map and attachments there, so a
        # killed edge's streams keep forwarding until the restarted container takes them over.
        - name: bpffs
          mountPath: /sys/fs/bpf
        {{- end }}
        {{- if $journal }}
        # The call journal (--state-dir): an edge container restarted in its pod (kill -9, OOM)
        # restores its calls from it.
        - name: state
          mountPath: /var/lib/trunkgate
        {{- end }}
        {{- if $tls }}
        - name: tls
          mountPath: /etc/trunkgate/tls
          readOnly: true
        {{- end }}
        {{- if $e.tls.caSecretName }}
        - name: tls-ca
          mountPath: /etc/trunkgate/tls-ca
          readOnly: true
        {{- end }}
  volumes:
    {{- if $fast }}
    - name: bpffs
      hostPath:
        path: /sys/fs/bpf
        type: Directory
    {{- end }}
    {{- if $journal }}
    - name: state
      emptyDir:
        sizeLimit: 256Mi
    {{- end }}
    {{- if $tls }}
    - name: tls
      secret:
        secretName: {{ $tls }}
    {{- end }}
    {{- if $e.tls.caSecretName }}
    - name: tls-ca
      secret:
        secretName: {{ $e.tls.caSecretName }}
        items:
          - key: ca.crt
            path: ca.crt
    {{- end }}
      {{- end }}
  {{- $nodeSelector := deepCopy $e.nodeSelector }}
  {{- if not $sts }}
  {{- $nodeSelector = mergeOverwrite $nodeSelector (deepCopy $e.daemonset.nodeSelector) }}
  {{- end }}
  {{- with $nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $e.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if and $sts (ne $e.antiAffinity "none") }}
  affinity:
    podAntiAffinity:
      {{- if eq $e.antiAffinity "required" }}
      requiredDuringSchedulingIgnoredDuringExecution:
        - topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "trunkgate.selectorLabels" (dict "root" $ "component" "edge") | nindent 14 }}
      {{- else }}
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector:
              matchLabels:
                {{- include "trunkgate.selectorLabels" (dict "root" $ "component" "edge") | nindent 16 }}
      {{- end }}
  {{- end }}
{{- end -}}
