// Package cli holds what the Go test clients share: the flags and stdout protocol of
// tests/java/TestProducer.java and TestConsumer.java, so tests/common/tools.rs drives every
// client the same way.
//
// Producer stdout:
//
//	VERSION <client> <version>
//	ACK i partition offset            one per acknowledged record
//	ERR i message                     one per failed record
//	FATAL message                     then exit 3
//	DONE acked=n errors=m             then exit 0
//
// Consumer stdout:
//
//	VERSION <client> <version>
//	MSG topic partition offset value  one per record
//	ERR what message                  the consumer carries on
//	DONE received=d                   d distinct (topic, value) pairs >= --expect; exit 0
//	TIMEOUT received=d                --timeout-sec passed first; exit 4
package cli

import (
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"
)

var outMu sync.Mutex

// Out prints one protocol line (lines from several goroutines never interleave).
func Out(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	line = strings.NewReplacer("\n", " ", "\r", " ").Replace(line)
	outMu.Lock()
	defer outMu.Unlock()
	os.Stdout.WriteString(line + "\n")
}

// Fatal prints FATAL and exits 3.
func Fatal(format string, args ...any) {
	Out("FATAL "+format, args...)
	os.Exit(3)
}

// ModuleVersion is the version of module path compiled into this binary.
func ModuleVersion(path string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == path {
				if d.Replace != nil {
					return d.Replace.Version
				}
				return d.Version
			}
		}
	}
	return "unknown"
}

// Props is a repeatable --prop key=value flag.
type Props map[string]string

func (p Props) String() string { return fmt.Sprint(map[string]string(p)) }
func (p Props) Set(kv string) error {
	k, v, ok := strings.Cut(kv, "=")
	if !ok || k == "" {
		return fmt.Errorf("--prop wants key=value, got %q", kv)
	}
	p[k] = v
	return nil
}

// MetadataMaxAge takes the one --prop the Go clients understand, metadata.max.age.ms (how often the
// client refreshes its metadata unasked), out of p; 0 if absent. Any other --prop is an error.
func MetadataMaxAge(p Props) time.Duration {
	var age time.Duration
	for k, v := range p {
		var ms int64
		if _, err := fmt.Sscan(v, &ms); k != "metadata.max.age.ms" || err != nil || ms <= 0 {
			Fatal("unsupported --prop %s=%s (only metadata.max.age.ms=N)", k, v)
		}
		age = time.Duration(ms) * time.Millisecond
	}
	return age
}

// Producer holds the producer's flags.
type Producer struct {
	Bootstrap   string
	Topic       string
	Count       int64
	Rate        float64
	Start       int64
	Acks        string // "" = the client's default
	Idempotence string // "true", "false" or "default"
	Props       Props
}

// ParseProducer parses the producer's flags (after the subcommand).
func ParseProducer(args []string) Producer {
	fs := flag.NewFlagSet("produce", flag.ExitOnError)
	p := Producer{Props: Props{}}
	fs.StringVar(&p.Bootstrap, "bootstrap", "", "host:port[,host:port]")
	fs.StringVar(&p.Topic, "topic", "", "topic")
	fs.Int64Var(&p.Count, "count", -1, "records to send")
	fs.Float64Var(&p.Rate, "rate-per-sec", 0, "records per second (0 = as fast as possible)")
	fs.Int64Var(&p.Start, "start", 0, "first value")
	fs.StringVar(&p.Acks, "acks", "", "all|1|0")
	fs.StringVar(&p.Idempotence, "idempotence", "default", "true|false|default")
	fs.Var(p.Props, "prop", "key=value (client specific)")
	_ = fs.Parse(args)
	if p.Bootstrap == "" || p.Topic == "" || p.Count < 0 {
		fs.Usage()
		os.Exit(2)
	}
	switch p.Idempotence {
	case "true", "false", "default":
	default:
		fmt.Fprintln(os.Stderr, "--idempotence true|false|default")
		os.Exit(2)
	}
	return p
}

// Pace sleeps until record n (0-based) is due at the configured rate, counted from t0.
func (p *Producer) Pace(t0 time.Time, n int64) {
	if p.Rate <= 0 {
		return
	}
	due := t0.Add(time.Duration(float64(n) * float64(time.Second) / p.Rate))
	if wait := time.Until(due); wait > 0 {
		time.Sleep(wait)
	}
}

// Consumer holds the consumer's flags.
type Consumer struct {
	Bootstrap string
	Group     string
	Topic     string
	Expect    int
	Timeout   time.Duration
	Props     Props
}

// ParseConsumer parses the consumer's flags (after the subcommand).
func ParseConsumer(args []string) Consumer {
	fs := flag.NewFlagSet("consume", flag.ExitOnError)
	c := Consumer{Props: Props{}}
	var timeoutSec float64
	fs.StringVar(&c.Bootstrap, "bootstrap", "", "host:port[,host:port]")
	fs.StringVar(&c.Group, "group", "", "consumer group")
	fs.StringVar(&c.Topic, "topic", "", "topic")
	fs.IntVar(&c.Expect, "expect", -1, "distinct (topic, value) pairs to wait for")
	fs.Float64Var(&timeoutSec, "timeout-sec", 60, "give up after this long")
	fs.Var(c.Props, "prop", "key=value (client specific)")
	_ = fs.Parse(args)
	if c.Bootstrap == "" || c.Group == "" || c.Topic == "" || c.Expect < 0 {
		fs.Usage()
		os.Exit(2)
	}
	c.Timeout = time.Duration(timeoutSec * float64(time.Second))
	return c
}

// Seen counts distinct (topic, value) pairs.
type Seen struct {
	mu   sync.Mutex
	set  map[[2]string]struct{}
	want int
}

func NewSeen(want int) *Seen { return &Seen{set: map[[2]string]struct{}{}, want: want} }

// Add prints the MSG line and reports whether --expect is reached.
func (s *Seen) Add(topic string, partition int32, offset int64, value []byte) bool {
	Out("MSG %s %d %d %s", topic, partition, offset, value)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.set[[2]string{topic, string(value)}] = struct{}{}
	return len(s.set) >= s.want
}

func (s *Seen) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.set)
}

// Finish prints DONE (exit 0) or TIMEOUT (exit 4).
func (s *Seen) Finish() {
	if n := s.Len(); n >= s.want {
		Out("DONE received=%d", n)
		os.Exit(0)
	} else {
		Out("TIMEOUT received=%d", n)
		os.Exit(4)
	}
}
