# Spillway on Nomad: a system job, so one host per client of the pool. The
# sidecar (HTTP API, QUIC peers, Raft member) and the node (tenant
# WebAssembly, CUDA) are two tasks of one group sharing the node's Unix
# socket in the allocation directory; host networking, so a host's
# addresses are its machine's; state in a host volume, so a restarted
# allocation rejoins its cluster. Secrets (the API's TLS files, the admin
# token once the cluster is founded) come from Nomad Variables.
#
#   nomad job run deploy/nomad/spillway.nomad.hcl     (from the repository root)
#
# deploy/nomad/README.md has the procedure.

variable "image" {
  type    = string
  default = "spillway:0.1.0"
}

variable "founder" {
  description = "The Nomad client (node name) that founds the cluster."
  type        = string
  default     = "gpu-node-1"
}

variable "gpus" {
  description = "GPUs each host's node takes: every GPU of a client in the pool."
  type        = number
  default     = 8
}

job "spillway" {
  type        = "system"
  datacenters = ["*"]

  constraint {
    attribute = "${meta.spillway_pool}"
    value     = "gpu"
  }

  update {
    max_parallel = 1
    stagger      = "30s"
  }

  group "host" {
    network {
      mode = "host"
      port "api" {
        static = 7070
      }
      port "peers" {
        static = 7443
      }
    }

    volume "state" {
      type      = "host"
      source    = "spillway-state"
      read_only = false
    }

    service {
      name     = "spillway-api"
      port     = "api"
      check {
        type     = "http"
        protocol = "https"
        path     = "/healthz"
        interval = "10s"
        timeout  = "2s"
        # The host's certificate is for spillway-api.service.consul and
        # localhost; the check only asks whether it serves.
        tls_skip_verify = true
      }
    }

    task "node" {
      driver = "docker"

      config {
        image        = var.image
        network_mode = "host"
        args         = ["node", "--config", "/local/node.toml"]
      }

      volume_mount {
        volume      = "state"
        destination = "/var/lib/spillway"
      }

      template {
        destination = "local/node.toml"
        data        = <<-EOT
          socket = "/alloc/node.sock"
          dir = "/var/lib/spillway/node"
          slots = 8
          max-memory-mib = 4096
        EOT
      }

      resources {
        cpu    = 8000
        memory = 65536
        device "nvidia/gpu" {
          count = var.gpus
        }
      }

      # A stopping host lets its running jobs end (deadlines are 300 s at most).
      kill_timeout = "330s"
    }

    task "sidecar" {
      driver = "docker"

      config {
        image        = var.image
        network_mode = "host"
        entrypoint   = ["/bin/sh", "/local/start.sh"]
      }

      volume_mount {
        volume      = "state"
        destination = "/var/lib/spillway"
      }

      env {
        HOST_IP                  = "${attr.unique.network.ip-address}"
        NODE_NAME                = "${node.unique.name}"
        SPILLWAY_FOUNDER         = var.founder
        SPILLWAY_POOL            = "gpu"
        SPILLWAY_STATE           = "/var/lib/spillway"
        SPILLWAY_CONFIG          = "/local/sidecar.toml"
        SPILLWAY_API_PORT        = "7070"
        SPILLWAY_PEER_PORT       = "7443"
        SPILLWAY_CA              = "/secrets/ca.crt"
        SPILLWAY_TICKET_ENDPOINT = "https://spillway-api.service.consul:7070"
      }

      # The same entry point as the Helm chart's.
      template {
        destination = "local/start.sh"
        data        = file("deploy/helm/spillway/files/start.sh")
      }

      template {
        destination = "local/sidecar.toml"
        data        = <<-EOT
          dir = "/var/lib/spillway/sidecar"
          node-socket = "/alloc/node.sock"
          slots = 8
          tls-cert = "/secrets/tls.crt"
          tls-key = "/secrets/tls.key"
          max-connections = 4096
        EOT
      }

      template {
        destination = "secrets/tls.crt"
        change_mode = "noop"
        data        = "{{ with nomadVar \"nomad/jobs/spillway\" }}{{ .tls_crt }}{{ end }}"
      }

      template {
        destination = "secrets/tls.key"
        change_mode = "noop"
        perms       = "0600"
        data        = "{{ with nomadVar \"nomad/jobs/spillway\" }}{{ .tls_key }}{{ end }}"
      }

      template {
        destination = "secrets/ca.crt"
        change_mode = "noop"
        data        = "{{ with nomadVar \"nomad/jobs/spillway\" }}{{ .ca_crt }}{{ end }}"
      }

      # The admin token, once it is stored (README): joining hosts make
      # their tickets with it.
      template {
        destination = "secrets/admin.env"
        env         = true
        data        = "{{ with nomadVar \"nomad/jobs/spillway\" }}{{ if .admin_token }}SPILLWAY_TOKEN={{ .admin_token }}{{ end }}{{ end }}"
      }

      resources {
        cpu    = 1000
        memory = 4096
      }

      kill_timeout = "330s"
    }
  }
}
