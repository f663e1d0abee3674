// ksc-sarama: test producer and consumer on Sarama (github.com/IBM/sarama), with the flags and stdout
// protocol of tests/java/TestProducer.java and TestConsumer.java (see internal/cli).
//
//	ksc-sarama produce --bootstrap H:P --topic T --count N --rate-per-sec R [--start S] [--acks all|1|0] [--idempotence true|false|default]
//	ksc-sarama consume --bootstrap H:P --group G --topic T --expect N --timeout-sec S
//
// Sarama is not idempotent by default; "default" here means the idempotent producer as Sarama
// documents it: Producer.Idempotent=true, RequiredAcks=WaitForAll, Net.MaxOpenRequests=1, retries on.
// Retries are raised from 3 to 30 (250 ms apart) so a record can outlast a switch, for the
// produce path and for metadata: when a leader lookup fails (a topic still being auto-created
// on the new cluster reads as unknown), Sarama fails the record at once, after only
// Metadata.Retry.Max lookups (3 by default, 0.75 s).
// AsyncClose waits for every record's result first: Sarama 1.62 fails batches that are
// waiting out a retry backoff at shutdown with ErrShuttingDown instead of flushing them.
// `--prop metadata.max.age.ms=N` sets Metadata.RefreshFrequency. Client logs go to stderr when
// KSC_GO_LOG=debug.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"ksc-test-clients/internal/cli"
)

const module = "github.com/IBM/sarama"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: ksc-sarama produce|consume [flags]")
		os.Exit(2)
	}
	if strings.EqualFold(os.Getenv("KSC_GO_LOG"), "debug") {
		sarama.Logger = log.New(os.Stderr, "[sarama] ", log.LstdFlags|log.Lmicroseconds)
	}
	switch os.Args[1] {
	case "produce":
		produce(cli.ParseProducer(os.Args[2:]))
	case "consume":
		consume(cli.ParseConsumer(os.Args[2:]))
	default:
		fmt.Fprintln(os.Stderr, "usage: ksc-sarama produce|consume [flags]")
		os.Exit(2)
	}
}

func isFatal(err error) bool {
	return errors.Is(err, sarama.ErrProducerFenced) ||
		errors.Is(err, sarama.ErrOutOfOrderSequenceNumber) ||
		errors.Is(err, sarama.ErrInvalidProducerIDMapping) ||
		errors.Is(err, sarama.ErrUnsupportedVersion) ||
		errors.Is(err, sarama.ErrSASLAuthenticationFailed) ||
		errors.Is(err, sarama.ErrTopicAuthorizationFailed) ||
		errors.Is(err, sarama.ErrClusterAuthorizationFailed)
}

func produce(p cli.Producer) {
	cli.Out("VERSION sarama %s", cli.ModuleVersion(module))
	cfg := sarama.NewConfig()
	if age := cli.MetadataMaxAge(p.Props); age > 0 {
		cfg.Metadata.RefreshFrequency = age
	}
	cfg.ClientID = "ksc-test-producer-sarama"
	cfg.Producer.Return.Successes = true
	cfg.Producer.Return.Errors = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Retry.Max = 30
	cfg.Producer.Retry.Backoff = 250 * time.Millisecond
	cfg.Metadata.Retry.Max = 30
	cfg.Metadata.Retry.Backoff = 250 * time.Millisecond
	switch p.Acks {
	case "", "all", "-1":
	case "1":
		cfg.Producer.RequiredAcks = sarama.WaitForLocal
	case "0":
		cfg.Producer.RequiredAcks = sarama.NoResponse
	default:
		cli.Fatal("bad --acks %q", p.Acks)
	}
	if p.Idempotence != "false" && cfg.Producer.RequiredAcks == sarama.WaitForAll {
		cfg.Producer.Idempotent = true
		cfg.Net.MaxOpenRequests = 1
	}
	producer, err := sarama.NewAsyncProducer(strings.Split(p.Bootstrap, ","), cfg)
	if err != nil {
		cli.Fatal("NewAsyncProducer: %v", err)
	}
	var mu sync.Mutex
	acked, failed, sent := 0, 0, 0
	var fatal string
	// a result arrived (non-blocking sends: the waiter re-reads the counts)
	progress := make(chan struct{}, 1)
	signal := func() {
		select {
		case progress <- struct{}{}:
		default:
		}
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for m := range producer.Successes() {
			mu.Lock()
			acked++
			mu.Unlock()
			signal()
			cli.Out("ACK %d %d %d", m.Metadata.(int64), m.Partition, m.Offset)
		}
	}()
	go func() {
		defer wg.Done()
		for e := range producer.Errors() {
			i := e.Msg.Metadata.(int64)
			mu.Lock()
			failed++
			if fatal == "" && isFatal(e.Err) {
				fatal = fmt.Sprintf("%d %v", i, e.Err)
			}
			mu.Unlock()
			signal()
			cli.Out("ERR %d %v", i, e.Err)
		}
	}()
	t0 := time.Now()
	for n := int64(0); n < p.Count; n++ {
		mu.Lock()
		stop := fatal != ""
		mu.Unlock()
		if stop {
			break
		}
		p.Pace(t0, n)
		i := p.Start + n
		v := sarama.StringEncoder(fmt.Sprint(i))
		producer.Input() <- &sarama.ProducerMessage{Topic: p.Topic, Key: v, Value: v, Metadata: i}
		sent++
	}
	// Bounded: 30 retries of 250 ms plus metadata lookups end well within a minute.
	deadline := time.After(time.Minute)
wait:
	for {
		mu.Lock()
		outstanding := sent - acked - failed
		mu.Unlock()
		if outstanding <= 0 {
			break
		}
		select {
		case <-progress:
		case <-deadline:
			break wait
		}
	}
	// AsyncClose flushes what is buffered; both channels close when it's done
	producer.AsyncClose()
	wg.Wait()
	if fatal != "" {
		cli.Fatal("%s", fatal)
	}
	cli.Out("DONE acked=%d errors=%d", acked, failed)
}

type handler struct {
	seen   *cli.Seen
	cancel context.CancelFunc
}

func (h *handler) Setup(s sarama.ConsumerGroupSession) error {
	var parts []string
	for t, ps := range s.Claims() {
		for _, p := range ps {
			parts = append(parts, fmt.Sprintf("%s-%d", t, p))
		}
	}
	cli.Out("ASSIGNED %s", strings.Join(parts, ","))
	return nil
}
func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *handler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for m := range c.Messages() {
		if h.seen.Add(m.Topic, m.Partition, m.Offset, m.Value) {
			h.cancel()
		}
		s.MarkMessage(m, "")
	}
	return nil
}

func consume(c cli.Consumer) {
	cli.Out("VERSION sarama %s", cli.ModuleVersion(module))
	cfg := sarama.NewConfig()
	if age := cli.MetadataMaxAge(c.Props); age > 0 {
		cfg.Metadata.RefreshFrequency = age
	}
	cfg.ClientID = "ksc-test-consumer-sarama"
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Group.Session.Timeout = 10 * time.Second
	cfg.Consumer.Group.Heartbeat.Interval = time.Second
	cfg.Consumer.Return.Errors = true
	group, err := sarama.NewConsumerGroup(strings.Split(c.Bootstrap, ","), c.Group, cfg)
	if err != nil {
		cli.Fatal("NewConsumerGroup: %v", err)
	}
	seen := cli.NewSeen(c.Expect)
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	go func() {
		for err := range group.Errors() {
			cli.Out("ERR group %v", err)
		}
	}()
	h := &handler{seen: seen, cancel: cancel}
	for ctx.Err() == nil && seen.Len() < c.Expect {
		if err := group.Consume(ctx, []string{c.Topic}, h); err != nil && ctx.Err() == nil {
			cli.Out("ERR consume %v", err)
			time.Sleep(500 * time.Millisecond)
		}
	}
	_ = group.Close()
	seen.Finish()
}
