// ksc-franz: test producer and consumer on franz-go (github.com/twmb/franz-go), with the flags and
// stdout protocol of tests/java/TestProducer.java and TestConsumer.java (see internal/cli).
//
//	ksc-franz produce --bootstrap H:P --topic T --count N --rate-per-sec R [--start S] [--acks all|1|0] [--idempotence true|false|default]
//	ksc-franz consume --bootstrap H:P --group G --topic T --expect N --timeout-sec S
//
// A consumer topic starting with `^` is a regular expression (as librdkafka takes it): the group
// subscribes to every topic it matches (kgo.ConsumeRegex).
//
// The producer is franz-go's default, idempotent with up to 5 requests in flight per broker, with
// topic auto-creation allowed (franz-go does not ask for it by default; a failover target that lacks
// the topic creates it on first use, as Java and librdkafka clients let it). It also prints
// `DATALOSS topic partition` when franz-go detects data loss (OUT_OF_ORDER_SEQUENCE_NUMBER on an
// idempotent producer), which it otherwise only logs. `--prop metadata.max.age.ms=N` is the one client
// property taken. Client logs go to stderr (KSC_GO_LOG, default warn).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"ksc-test-clients/internal/cli"
)

const module = "github.com/twmb/franz-go"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: ksc-franz produce|consume [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "produce":
		produce(cli.ParseProducer(os.Args[2:]))
	case "consume":
		consume(cli.ParseConsumer(os.Args[2:]))
	default:
		fmt.Fprintln(os.Stderr, "usage: ksc-franz produce|consume [flags]")
		os.Exit(2)
	}
}

func logger() kgo.Opt {
	level := kgo.LogLevelWarn
	switch strings.ToLower(os.Getenv("KSC_GO_LOG")) {
	case "debug":
		level = kgo.LogLevelDebug
	case "info":
		level = kgo.LogLevelInfo
	case "error":
		level = kgo.LogLevelError
	}
	return kgo.WithLogger(kgo.BasicLogger(os.Stderr, level, nil))
}

// isFatal: errors after which this producer can't go on.
func isFatal(err error) bool {
	return errors.Is(err, kerr.ProducerFenced) ||
		errors.Is(err, kerr.InvalidProducerIDMapping) ||
		errors.Is(err, kerr.UnsupportedVersion) ||
		errors.Is(err, kerr.SaslAuthenticationFailed) ||
		errors.Is(err, kerr.TopicAuthorizationFailed) ||
		errors.Is(err, kerr.ClusterAuthorizationFailed) ||
		errors.Is(err, kgo.ErrClientClosed)
}

func produce(p cli.Producer) {
	cli.Out("VERSION franz-go %s", cli.ModuleVersion(module))
	opts := []kgo.Opt{
		kgo.SeedBrokers(strings.Split(p.Bootstrap, ",")...),
		kgo.ClientID("ksc-test-producer-franz"),
		kgo.DefaultProduceTopic(p.Topic),
		kgo.AllowAutoTopicCreation(),
		// long enough to ride out a proxy switching clusters (like the Java client's delivery.timeout.ms)
		kgo.RecordDeliveryTimeout(120 * time.Second),
		kgo.ProducerOnDataLossDetected(func(topic string, partition int32) {
			cli.Out("DATALOSS %s %d", topic, partition)
		}),
		logger(),
	}
	switch p.Acks {
	case "", "all", "-1":
	case "1":
		opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()))
	case "0":
		opts = append(opts, kgo.RequiredAcks(kgo.NoAck()))
	default:
		cli.Fatal("bad --acks %q", p.Acks)
	}
	if p.Idempotence == "false" || p.Acks == "1" || p.Acks == "0" {
		opts = append(opts, kgo.DisableIdempotentWrite())
	}
	if age := cli.MetadataMaxAge(p.Props); age > 0 {
		opts = append(opts, kgo.MetadataMaxAge(age), kgo.MetadataMinAge(min(age, time.Second)))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		cli.Fatal("NewClient: %v", err)
	}
	var acked, failed atomic.Int64
	var fatal atomic.Pointer[string]
	ctx := context.Background()
	t0 := time.Now()
	for n := int64(0); n < p.Count && fatal.Load() == nil; n++ {
		p.Pace(t0, n)
		i := p.Start + n
		v := []byte(fmt.Sprint(i))
		cl.Produce(ctx, &kgo.Record{Key: v, Value: v}, func(r *kgo.Record, err error) {
			if err != nil {
				failed.Add(1)
				msg := fmt.Sprintf("%d %v", i, err)
				cli.Out("ERR %s", msg)
				if isFatal(err) {
					fatal.CompareAndSwap(nil, &msg)
				}
				return
			}
			acked.Add(1)
			cli.Out("ACK %d %d %d", i, r.Partition, r.Offset)
		})
	}
	if err := cl.Flush(ctx); err != nil {
		s := fmt.Sprintf("flush: %v", err)
		fatal.CompareAndSwap(nil, &s)
	}
	if f := fatal.Load(); f != nil {
		cl.Close()
		cli.Fatal("%s", *f)
	}
	cl.Close()
	cli.Out("DONE acked=%d errors=%d", acked.Load(), failed.Load())
}

func consume(c cli.Consumer) {
	cli.Out("VERSION franz-go %s", cli.ModuleVersion(module))
	opts := []kgo.Opt{
		kgo.SeedBrokers(strings.Split(c.Bootstrap, ",")...),
		kgo.ClientID("ksc-test-consumer-franz"),
		kgo.ConsumerGroup(c.Group),
		kgo.ConsumeTopics(c.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(10 * time.Second),
		kgo.HeartbeatInterval(time.Second),
		kgo.DisableAutoCommit(),
		logger(),
	}
	if strings.HasPrefix(c.Topic, "^") {
		opts = append(opts, kgo.ConsumeRegex())
	}
	if age := cli.MetadataMaxAge(c.Props); age > 0 {
		opts = append(opts, kgo.MetadataMaxAge(age), kgo.MetadataMinAge(min(age, time.Second)))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		cli.Fatal("NewClient: %v", err)
	}
	seen := cli.NewSeen(c.Expect)
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	for seen.Len() < c.Expect && ctx.Err() == nil {
		fetches := cl.PollFetches(ctx)
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				cli.Out("ERR fetch %s-%d %v", t, p, err)
			}
		})
		got := false
		fetches.EachRecord(func(r *kgo.Record) {
			got = true
			seen.Add(r.Topic, r.Partition, r.Offset, r.Value)
		})
		if got {
			if err := cl.CommitUncommittedOffsets(ctx); err != nil && ctx.Err() == nil {
				cli.Out("ERR commit %v", err)
			}
		}
	}
	leave, cancelLeave := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelLeave()
	_ = cl.LeaveGroupContext(leave)
	cl.Close()
	seen.Finish()
}
