package config

import (
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Cluster is cluster mode: several relay nodes share state through NATS JetStream — the
// devices' journal, their lastSeq, the routes' partitioned queues, commands and the control plane
// (README, "Cluster mode").
type Cluster struct {
	// The NATS JetStream cluster the nodes share.
	NATS ClusterNATS `yaml:"nats"`
}

// ClusterNATS says how to reach NATS and how to name and replicate what is kept there.
type ClusterNATS struct {
	// NATS server URL(s), comma-separated (nats://host:4222,...). "": one node with its embedded
	// store only (the default; nothing below applies).
	URL string `yaml:"url"`
	// NATS credentials file (JWT and NKey seed); "": none.
	Creds string `yaml:"creds"`
	// TLS to the NATS servers (tls:// URLs, or servers that require it).
	TLS ClusterTLS `yaml:"tls"`
	// Replicas of each stream, 1 to 5: 3 survives the loss of one NATS node.
	Replicas int `yaml:"replicas"`
	// Names the streams: nodes of one prefix share them. Letters, digits, - and _.
	Prefix string `yaml:"prefix"`
	// Partitions of the journal (fixed when the journal stream is created).
	Partitions int `yaml:"partitions"`
	// How long a dead relay's partitions wait before another takes them.
	Lease Duration `yaml:"lease"`
	// This relay's name among its prefix's; "": host name and a random suffix.
	Node string `yaml:"node"`
}

// ClusterTLS is the client side of TLS to NATS.
type ClusterTLS struct {
	// PEM file of CA certificates trusted in addition to the system's.
	CAFile string `yaml:"ca_file"`
	// Client certificate and key (PEM) for mutual TLS; both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Enabled reports whether the relay runs in cluster mode.
func (c *Cluster) Enabled() bool { return c.NATS.URL != "" }

var prefixRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func (c *Config) validateCluster(p *problems) {
	n := &c.Cluster.NATS
	if n.URL != "" {
		for u := range strings.SplitSeq(n.URL, ",") {
			u = strings.TrimSpace(u)
			pu, err := url.Parse(u)
			if err != nil || pu.Host == "" || !slices.Contains([]string{"nats", "tls", "ws", "wss"}, pu.Scheme) {
				p.add("cluster.nats.url", "%q: want scheme://host:port, scheme nats, tls, ws or wss", u)
			}
		}
	}
	if n.Replicas < 1 || n.Replicas > 5 {
		p.add("cluster.nats.replicas", "must be between 1 and 5, got %d", n.Replicas)
	}
	if !prefixRE.MatchString(n.Prefix) {
		p.add("cluster.nats.prefix", "must be 1 to 64 letters, digits, - or _, got %q", n.Prefix)
	}
	if n.Partitions < 1 || n.Partitions > 1024 {
		p.add("cluster.nats.partitions", "must be between 1 and 1024, got %d", n.Partitions)
	}
	if l := time.Duration(n.Lease); l < time.Second || l > time.Minute {
		p.add("cluster.nats.lease", "must be between 1s and 1m, got %s", l)
	}
	if n.Node != "" && !prefixRE.MatchString(n.Node) {
		p.add("cluster.nats.node", "must be 1 to 64 letters, digits, - or _, got %q", n.Node)
	}
	if n.URL != "" && c.Devices.Ack == AckDelivery {
		p.add("devices.ack", "delivery is not supported in cluster mode yet (cluster.nats.url is set): use persist")
	}
	if (n.TLS.CertFile == "") != (n.TLS.KeyFile == "") {
		p.add("cluster.nats.tls", "cert_file and key_file go together")
	}
}
