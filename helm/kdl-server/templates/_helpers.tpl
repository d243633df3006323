{{/*
Names, labels and the shared pieces of the backup, verify and restore pods.
*/}}

{{/* The chart name, overridable with nameOverride. */}}
{{- define "kdl-server.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The fully qualified app name: release name + chart name, unless the release name already holds it. */}}
{{- define "kdl-server.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "kdl-server.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The backup CronJob's name (52 characters at most: the controller appends a suffix to its Jobs). */}}
{{- define "kdl-server.backupName" -}}
{{- default (printf "%s-backup" (include "kdl-server.fullname" .)) .Values.backup.name | trunc 45 | trimSuffix "-" }}
{{- end }}

{{/* The verification CronJob's name. */}}
{{- define "kdl-server.verifyName" -}}
{{- printf "%s-verify" (include "kdl-server.backupName" .) }}
{{- end }}

{{/* Common labels. */}}
{{- define "kdl-server.labels" -}}
helm.sh/chart: {{ include "kdl-server.chart" . }}
{{ include "kdl-server.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kdl
{{- end }}

{{/* Selector labels. */}}
{{- define "kdl-server.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kdl-server.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "kdl-server.serviceAccountName" -}}
{{- if .Values.backup.serviceAccount.create }}
{{- default (include "kdl-server.backupName" .) .Values.backup.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.backup.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret with BUCKET_NAME and the static AWS keys: the user's existing one or the chart's. */}}
{{- define "kdl-server.backupSecretName" -}}
{{- default (printf "%s-secrets" (include "kdl-server.backupName" .)) .Values.backup.s3.existingSecret }}
{{- end }}

{{/* The Secret with the NOTIFY_* settings, or "" when no notification is configured. */}}
{{- define "kdl-server.notificationsSecretName" -}}
{{- $n := .Values.backup.notifications }}
{{- if $n.existingSecret }}
{{- $n.existingSecret }}
{{- else if (include "kdl-server.notificationsData" .) }}
{{- printf "%s-notifications" (include "kdl-server.backupName" .) }}
{{- end }}
{{- end }}

{{/* The NOTIFY_* keys the chart's notifications Secret holds (only those set), as YAML. */}}
{{- define "kdl-server.notificationsData" -}}
{{- $n := .Values.backup.notifications }}
{{- $data := dict
  "NOTIFY_SLACK_WEBHOOK_URL" $n.slackWebhookURL
  "NOTIFY_WEBHOOK_URL" $n.webhookURL
  "NOTIFY_WEBHOOK_SECRET" $n.webhookSecret
  "NOTIFY_SMTP_URL" $n.smtp.url
  "NOTIFY_SMTP_USER" $n.smtp.user
  "NOTIFY_SMTP_PASSWORD" $n.smtp.password
  "NOTIFY_MAIL_FROM" $n.smtp.from
  "NOTIFY_MAIL_TO" $n.smtp.to
  "NOTIFY_PUSHGATEWAY_URL" $n.pushgatewayURL
  "NOTIFY_HEALTHCHECK_URL" $n.healthcheckURL
  "NOTIFY_VERIFY_HEALTHCHECK_URL" $n.verifyHealthcheckURL }}
{{- range $key := keys $data | sortAlpha }}
{{- with get $data $key }}
{{ $key }}: {{ . | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Secret holding a literal MongoDB connection string (global.mongodb.connectionString.uri). */}}
{{- define "kdl-server.mongodbSecretName" -}}
{{- printf "%s-mongodb" (include "kdl-server.backupName" .) }}
{{- end }}

{{/* The image reference: repository, then @digest or :tag (default: the chart's appVersion). */}}
{{- define "kdl-server.image" -}}
{{- $image := .Values.backup.image -}}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (toString (default .Chart.AppVersion $image.tag)) }}
{{- end }}
{{- end }}

{{/* The components backup.sh runs (BACKUP_COMPONENTS), space separated. */}}
{{- define "kdl-server.components" -}}
{{- $enabled := list }}
{{- range $name := list "gitea" "mongodb" "mlflow" "kubernetes" }}
{{- if (get $.Values.backup.components $name).enabled }}
{{- $enabled = append $enabled $name }}
{{- end }}
{{- end }}
{{- if not (include "kdl-server.giteaEnabled" .) }}{{ $enabled = without $enabled "gitea" }}{{ end }}
{{- if .Values.backup.postgres.databases }}{{ $enabled = append $enabled "postgres" }}{{ end }}
{{- if .Values.backup.volumes }}{{ $enabled = append $enabled "volumes" }}{{ end }}
{{- if .Values.backup.minio.enabled }}{{ $enabled = append $enabled "minio" }}{{ end }}
{{- join " " $enabled }}
{{- end }}

{{/* Whether Gitea is backed up: enabled, and the platform is not KDL 6 (which has no Gitea): "true" or "". */}}
{{- define "kdl-server.giteaEnabled" -}}
{{- if and .Values.backup.components.gitea.enabled (ne .Values.backup.platform "kdl6") }}true{{ end }}
{{- end }}

{{/* The custom resources the Role grants: backup.kubernetes.resources, else both generations' (the platform's default). */}}
{{- define "kdl-server.k8sResources" -}}
{{- if .Values.backup.kubernetes.resources }}
{{- join " " .Values.backup.kubernetes.resources }}
{{- else -}}
kdlprojects.v1.project.konstellation.io usertools.v1alpha1.kdl.konstellation.io kdlprojects.v1.kdl.konstellation.io kdlusertools.v1.kdl.konstellation.io
{{- end }}
{{- end }}

{{/* The env of the postgres and volumes components: BACKUP_POSTGRES_DATABASES with PG_<NAME>_*, BACKUP_VOLUMES. */}}
{{- define "kdl-server.extraComponentsEnv" -}}
{{- $b := .Values.backup -}}
{{- with $b.postgres.databases }}
{{- $names := list }}
{{- range . }}{{ $names = append $names .name }}{{ end }}
- name: BACKUP_POSTGRES_DATABASES
  value: {{ join " " $names | quote }}
{{- range . }}
{{- $n := upper .name | replace "-" "_" }}
{{- with .host }}
- name: PG_{{ $n }}_HOST
  value: {{ . | quote }}
{{- end }}
{{- with .port }}
- name: PG_{{ $n }}_PORT
  value: {{ . | quote }}
{{- end }}
{{- with .database }}
- name: PG_{{ $n }}_DATABASE
  value: {{ . | quote }}
{{- end }}
{{- with .user }}
- name: PG_{{ $n }}_USER
  value: {{ . | quote }}
{{- end }}
- name: PG_{{ $n }}_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .passwordKey }}
{{- end }}
{{- end }}
{{- with $b.volumes }}
{{- $pairs := list }}
{{- range . }}{{ $pairs = append $pairs (printf "%s=/volumes/%s" .name .name) }}{{ end }}
- name: BACKUP_VOLUMES
  value: {{ join " " $pairs | quote }}
{{- range . }}
{{- if .exclude }}
- name: BACKUP_VOLUME_{{ upper .name | replace "-" "_" }}_EXCLUDE
  value: {{ join " " .exclude | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The env of the minio component: MINIO_* from backup.minio, the credentials from its Secret. */}}
{{- define "kdl-server.minioEnv" -}}
{{- $m := .Values.backup.minio -}}
{{- if $m.enabled }}
{{- if not (and $m.endpoint $m.existingSecret) }}
{{- fail "backup.minio.enabled needs backup.minio.endpoint (http(s)://host:port) and backup.minio.existingSecret (MinIO's credentials)" }}
{{- end }}
- name: MINIO_ENDPOINT
  value: {{ $m.endpoint | quote }}
- name: MINIO_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $m.existingSecret }}
      key: {{ $m.accessKeyKey }}
- name: MINIO_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $m.existingSecret }}
      key: {{ $m.secretKeyKey }}
- name: MINIO_BUCKETS
  value: {{ (join " " $m.buckets) | default "*" | quote }}
{{- with $m.excludeRegex }}
- name: MINIO_EXCLUDE_REGEX
  value: {{ . | quote }}
{{- end }}
- name: BACKUP_MINIO_FULL_EVERY
  value: {{ $m.fullEvery | quote }}
{{- if $m.caBundle }}
- name: MINIO_CA_FILE
  value: /etc/kdl-backup/minio-ca/ca.crt
{{- end }}
{{- end }}
{{- end }}

{{/* Whether a MongoDB connection string is configured: "true" or "". */}}
{{- define "kdl-server.mongodbConfigured" -}}
{{- $cs := ((.Values.global).mongodb).connectionString | default dict }}
{{- if or (and $cs.secretName $cs.secretKey) $cs.uri }}true{{ end }}
{{- end }}

{{/* Whether something is mounted at backup.mlflow.path: "true" or "". */}}
{{- define "kdl-server.mlflowMounted" -}}
{{- $m := .Values.backup.mlflow -}}
{{- $mounted := or $m.hostPath $m.existingClaim }}
{{- range .Values.backup.extraVolumeMounts }}
{{- if eq (trimSuffix "/" .mountPath) (trimSuffix "/" $m.path) }}{{ $mounted = true }}{{ end }}
{{- end }}
{{- if $mounted }}true{{ end }}
{{- end }}

{{/* Whether the pods need the API server (the kubernetes component): "true" or "". */}}
{{- define "kdl-server.needsAPI" -}}
{{- if .Values.backup.components.kubernetes.enabled }}true{{ end }}
{{- end }}

{{/*
A resource quantity in base units (cores, bytes) as a float, so that 100m and 0.1,
or 256Mi and 1Gi, compare by value. The schema admits only the forms parsed here.
*/}}
{{- define "kdl-server.quantity" -}}
{{- $q := toString . }}
{{- $number := regexFind "^[0-9]*\\.?[0-9]+" $q }}
{{- $suffix := trimPrefix $number $q }}
{{- $factors := dict "" 1.0 "m" 0.001 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 }}
{{- if or (not $number) (not (hasKey $factors $suffix)) }}
{{- fail (printf "%q is not a resource quantity such as 100m, 0.5, 256Mi or 1Gi" $q) }}
{{- end }}
{{- mulf (float64 $number) (get $factors $suffix) }}
{{- end }}

{{/*
Fails the render when a limit is below its request: the API server would reject the Job.
Called with (dict "path" "backup.resources" "resources" $resources).
*/}}
{{- define "kdl-server.checkResources" -}}
{{- $requests := .resources.requests | default dict }}
{{- $limits := .resources.limits | default dict }}
{{- range $name := keys $limits | sortAlpha }}
{{- if hasKey $requests $name }}
{{- $limit := get $limits $name }}
{{- $request := get $requests $name }}
{{- if lt (float64 (include "kdl-server.quantity" $limit)) (float64 (include "kdl-server.quantity" $request)) }}
{{- fail (printf "%s: limits.%s (%v) is below requests.%s (%v); the API server rejects a container whose limit is lower than its request: raise the limit or lower the request" $.path $name $limit $name $request) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Environment shared by every pod: S3 location and credentials, from Secrets only. */}}
{{- define "kdl-server.s3Env" -}}
{{- $s3 := .Values.backup.s3 -}}
{{- $secret := include "kdl-server.backupSecretName" . -}}
- name: BACKUP_S3_BUCKET
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: BUCKET_NAME
{{- if or $s3.existingSecret $s3.awsAccessKeyID }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: AWS_ACCESS_KEY_ID
      {{- if $s3.existingSecret }}
      optional: true
      {{- end }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: AWS_SECRET_ACCESS_KEY
      {{- if $s3.existingSecret }}
      optional: true
      {{- end }}
{{- end }}
- name: BACKUP_S3_PREFIX
  value: {{ $s3.prefix | quote }}
- name: AWS_REGION
  value: {{ $s3.region | quote }}
{{- with $s3.endpoint }}
- name: AWS_ENDPOINT_URL_S3
  value: {{ . | quote }}
{{- end }}
{{- if $s3.forcePathStyle }}
- name: AWS_S3_FORCE_PATH_STYLE
  value: "true"
{{- end }}
{{- end }}

{{/* Gitea's PostgreSQL (libpq's own names); the password from the platform's Secret. */}}
{{- define "kdl-server.postgresEnv" -}}
{{- $pg := .Values.backup.gitea.postgres -}}
- name: PGHOST
  value: {{ $pg.host | quote }}
- name: PGPORT
  value: {{ $pg.port | quote }}
- name: PGDATABASE
  value: {{ $pg.database | quote }}
- name: PGUSER
  value: {{ $pg.user | quote }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $pg.existingSecret }}
      key: {{ $pg.passwordKey }}
{{- end }}

{{/* Everything backup.sh reads (issue 7's table), for the backup container and the restore pod. */}}
{{- define "kdl-server.backupEnv" -}}
{{- $b := .Values.backup -}}
{{- include "kdl-server.s3Env" . }}
{{- with $b.s3.sse }}
- name: BACKUP_S3_SSE
  value: {{ . | quote }}
{{- end }}
{{- with $b.s3.storageClass }}
- name: BACKUP_S3_STORAGE_CLASS
  value: {{ . | quote }}
{{- end }}
- name: BACKUP_PLATFORM
  value: {{ $b.platform | quote }}
- name: BACKUP_COMPONENTS
  value: {{ include "kdl-server.components" . | quote }}
{{- if include "kdl-server.giteaEnabled" . }}
- name: GITEA_DATA_DIR
  value: /data
- name: GITEA_DATA_EXCLUDE
  value: {{ join " " $b.gitea.excludes | quote }}
{{ include "kdl-server.postgresEnv" . }}
{{- end }}
{{- if or (include "kdl-server.giteaEnabled" .) $b.postgres.databases }}
- name: BACKUP_PG_DUMP_COMPRESS
  value: {{ .Values.backup.gitea.postgres.dumpCompress | quote }}
{{- end }}
{{- include "kdl-server.extraComponentsEnv" . }}
{{- include "kdl-server.minioEnv" . }}
{{- if and $b.components.mongodb.enabled (include "kdl-server.mongodbConfigured" .) }}
{{- $cs := .Values.global.mongodb.connectionString }}
- name: MONGO_URI
  valueFrom:
    secretKeyRef:
      {{- if $cs.secretName }}
      name: {{ $cs.secretName }}
      key: {{ $cs.secretKey }}
      {{- else }}
      name: {{ include "kdl-server.mongodbSecretName" . }}
      key: MONGO_URI
      {{- end }}
{{- end }}
{{- if $b.components.mlflow.enabled }}
- name: MLFLOW_ROOT
  value: {{ $b.mlflow.path | quote }}
{{- end }}
{{- if $b.components.kubernetes.enabled }}
- name: K8S_NAMESPACE
  value: {{ .Release.Namespace | quote }}
{{- with $b.kubernetes.resources }}
- name: K8S_RESOURCES
  value: {{ join " " . | quote }}
{{- end }}
- name: K8S_SECRET_NAME_REGEX
  value: {{ $b.kubernetes.secretNameRegex | quote }}
{{- end }}
{{- with $b.encryption.ageRecipients }}
- name: BACKUP_AGE_RECIPIENTS
  value: {{ join " " . | quote }}
{{- end }}
- name: BACKUP_REQUIRE_ENCRYPTION
  value: {{ $b.encryption.required | quote }}
- name: BACKUP_KEEP_LAST
  value: {{ $b.retention.keepLast | quote }}
- name: BACKUP_KEEP_DAYS
  value: {{ $b.retention.keepDays | quote }}
- name: TMPDIR
  value: /tmp
{{- with $b.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every pod: service account, security, scheduling. */}}
{{- define "kdl-server.podSpecCommon" -}}
{{- $b := .Values.backup -}}
serviceAccountName: {{ include "kdl-server.serviceAccountName" . }}
{{- with $b.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
securityContext:
  {{- toYaml $b.podSecurityContext | nindent 2 }}
{{- with $b.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $b.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $b.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The writable /tmp of a read-only root filesystem. */}}
{{- define "kdl-server.tmpVolume" -}}
- name: tmp
  {{- with .Values.backup.tmpSizeLimit }}
  emptyDir:
    sizeLimit: {{ . }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- end }}

{{/*
The data volumes: Gitea's claim, the MLflow volume and the extra ones.
Called with (dict "root" $ "readOnly" true|false).
*/}}
{{- define "kdl-server.dataVolumes" -}}
{{- $b := .root.Values.backup -}}
{{- $ro := .readOnly }}
{{- if include "kdl-server.giteaEnabled" .root }}
- name: gitea-data
  persistentVolumeClaim:
    claimName: {{ $b.gitea.existingClaim }}
    readOnly: {{ .readOnly }}
{{- end }}
{{- if $b.components.mlflow.enabled }}
{{- if $b.mlflow.hostPath }}
- name: mlflow
  hostPath:
    path: {{ $b.mlflow.hostPath }}
    type: Directory
{{- else if $b.mlflow.existingClaim }}
- name: mlflow
  persistentVolumeClaim:
    claimName: {{ $b.mlflow.existingClaim }}
    readOnly: {{ .readOnly }}
{{- end }}
{{- end }}
{{- range $b.volumes }}
- name: volume-{{ .name }}
  {{- if .existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .existingClaim }}
    readOnly: {{ $ro }}
  {{- else }}
  hostPath:
    path: {{ .hostPath }}
    type: Directory
  {{- end }}
{{- end }}
{{- if and $b.minio.enabled $b.minio.caBundle }}
- name: minio-ca
  configMap:
    name: {{ include "kdl-server.backupName" .root }}-minio-ca
{{- end }}
{{- with $b.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Mounts of the data volumes. Called with (dict "root" $ "readOnly" true|false). */}}
{{- define "kdl-server.dataVolumeMounts" -}}
{{- $b := .root.Values.backup -}}
- name: tmp
  mountPath: /tmp
{{- $ro := .readOnly }}
{{- if include "kdl-server.giteaEnabled" .root }}
- name: gitea-data
  mountPath: /data
  readOnly: {{ .readOnly }}
{{- end }}
{{- range $b.volumes }}
- name: volume-{{ .name }}
  mountPath: /volumes/{{ .name }}
  readOnly: {{ $ro }}
{{- end }}
{{- if and $b.components.mlflow.enabled (or $b.mlflow.hostPath $b.mlflow.existingClaim) }}
- name: mlflow
  mountPath: {{ $b.mlflow.path }}
  readOnly: {{ .readOnly }}
{{- end }}
{{- if and $b.minio.enabled $b.minio.caBundle }}
- name: minio-ca
  mountPath: /etc/kdl-backup/minio-ca
  readOnly: true
{{- end }}
{{- with $b.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Refuses to render into the release that holds the platform: Helm would delete every object of the platform's
release that this chart does not render. Called with (dict "objects" LIST "release" NAME "namespace" NS), LIST of
{kind, name, annotations} of the namespace's workloads; this chart renders no Deployment or StatefulSet, so one
that Helm records as this release's belongs to the platform.
*/}}
{{- define "kdl-server.refuseSharedRelease" -}}
{{- range .objects }}
{{- if eq (get (.annotations | default dict) "meta.helm.sh/release-name") $.release }}
{{- fail (printf "release %q already holds the platform (%s %s): installing the backup into it would make Helm delete the platform's objects. Install the backup as its own release: helm upgrade --install kdl-backup ./helm/kdl-server -n %s --set backup.enabled=true ..." $.release .kind .name $.namespace) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The namespace's Deployments and StatefulSets as {kind, name, annotations}, from the API server (empty under helm template). */}}
{{- define "kdl-server.namespaceWorkloads" -}}
{{- $found := list }}
{{- range $kind := list "Deployment" "StatefulSet" }}
{{- $list := lookup "apps/v1" $kind $.Release.Namespace "" }}
{{- range (get ($list | default dict) "items" | default list) }}
{{- $found = append $found (dict "kind" $kind "name" .metadata.name "annotations" (.metadata.annotations | default dict)) }}
{{- end }}
{{- end }}
{{- toJson $found }}
{{- end }}
