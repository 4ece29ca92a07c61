package servicebus_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus/admin"

	"github.com/presence-bridge/presence-bridge/servicebus"
	"github.com/presence-bridge/presence-bridge/servicebus/sbtest"
)

const (
	alexTopic = "6f1c2a3b-1111-2222-3333-444455556666"
	samTopic  = "0b8e9f00-aaaa-bbbb-cccc-ddddeeeeffff"
	manageKey = "bWFuYWdlLWtleS1mb3ItdGVzdHM="
)

// namespace is a stand-in broker whose keys are checked, with the
// management fake wired to it.
func namespace(t *testing.T) (*sbtest.Broker, *sbtest.Management, string) {
	t.Helper()
	b := sbtest.Start(t, sbtest.Options{Keys: map[string]string{"RootManageSharedAccessKey": manageKey}})
	m := sbtest.NewManagement(t, sbtest.ManagementOptions{Broker: b, ManageKeys: map[string]string{"RootManageSharedAccessKey": manageKey}})
	return b, m, b.ConnectionStringWithKey("RootManageSharedAccessKey", manageKey)
}

func manager(t *testing.T, m *sbtest.Management, cs string) *servicebus.Manager {
	t.Helper()
	mgr, err := servicebus.NewManager(servicebus.ManagerOptions{ConnectionString: cs, AdminEndpoint: m.URL(), HTTPClient: m.Client()})
	if err != nil {
		t.Fatal(err)
	}
	return mgr
}

// TestProvisionPublishListen: a person's topic is created with duplicate
// detection and a 1 h TTL, with the configured subscriptions and a
// Listen-only key; messages published to it reach the subscription with
// their id, content type and application properties; the topic-scoped key
// reads that topic and no other; a retried send with the same id is
// dropped; signing in again rotates the key.
func TestProvisionPublishListen(t *testing.T) {
	b, m, cs := namespace(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	mgr := manager(t, m, cs)

	p, err := mgr.Provision(ctx, alexTopic, []string{"home", "office"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if !p.CreatedTopic || !strings.Contains(p.ListenConnectionString, "EntityPath="+alexTopic) {
		t.Fatalf("provisioned %+v", p.CreatedTopic)
	}
	info, ok := m.Topic(alexTopic)
	if !ok || !info.RequiresDuplicateDetection || info.DefaultMessageTimeToLive != "PT1H" || len(info.Subscriptions) != 2 {
		t.Fatalf("topic: %+v", info)
	}
	if len(info.Rules) != 1 || info.Rules[0].Name != servicebus.ListenRuleName || len(info.Rules[0].Rights) != 1 || info.Rules[0].Rights[0] != "Listen" {
		t.Fatalf("rules: %+v", info.Rules)
	}
	if _, err := mgr.Provision(ctx, samTopic, []string{"home"}, false); err != nil {
		t.Fatal(err)
	}
	if n, err := mgr.CountTopics(ctx); err != nil || n != 2 {
		t.Fatalf("CountTopics = %d, %v", n, err)
	}

	pub, err := servicebus.NewPublisher(servicebus.PublisherOptions{ConnectionStrings: []string{cs}})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close(context.Background())
	msg := servicebus.Message{ID: alexTopic + ":1000", Body: []byte(`{"version":1}`), UserID: alexTopic, Availability: "Busy", Activity: "InACall"}
	for range 2 { // the second is a retried send: duplicate detection drops it
		if err := pub.Publish(ctx, mgr.Host(), alexTopic, msg); err != nil {
			t.Fatal(err)
		}
	}
	msg2 := msg
	msg2.ID = alexTopic + ":2000"
	if err := pub.Publish(ctx, mgr.Host(), alexTopic, msg2); err != nil {
		t.Fatal(err)
	}

	listen, err := sbtest.NewClient(p.ListenConnectionString)
	if err != nil {
		t.Fatal(err)
	}
	defer listen.Close(context.Background())
	got, err := sbtest.Drain(ctx, listen, alexTopic+"/Subscriptions/home", 0, 2)
	if err != nil {
		t.Fatalf("the topic-scoped Listen key cannot read its own topic: %v", err)
	}
	if got[0].MessageID != msg.ID || got[1].MessageID != msg2.ID || *got[0].ContentType != "application/json" ||
		got[0].ApplicationProperties["availability"] != "Busy" || got[0].ApplicationProperties["userId"] != alexTopic {
		t.Errorf("received %v %v", got[0].MessageID, got[0].ApplicationProperties)
	}
	if n := b.Count(ctx, alexTopic+"/Subscriptions/home", 0); n != 0 {
		t.Errorf("%d messages left: the retried send was not dropped", n)
	}

	other, err := listen.NewReceiverForSubscription(samTopic, "home", nil)
	if err == nil {
		_, err = other.PeekMessages(ctx, 1, nil)
	}
	if err == nil || servicebus.Classify(err) != servicebus.FailUnauthorized {
		t.Errorf("the Listen key of one topic read another: %v", err)
	}

	again, err := mgr.Provision(ctx, alexTopic, []string{"home", "office"}, true)
	if err != nil || again.CreatedTopic || again.ListenConnectionString == p.ListenConnectionString {
		t.Fatalf("re-sign-in did not rotate the key (err %v)", err)
	}
	old, err := sbtest.NewClient(p.ListenConnectionString)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close(context.Background())
	r, err := old.NewReceiverForSubscription(alexTopic, "home", nil)
	if err == nil {
		_, err = r.PeekMessages(ctx, 1, nil)
	}
	if err == nil {
		t.Error("the rotated-out key still reads the topic")
	}
}

func TestProvisionWithoutManageRights(t *testing.T) {
	_, m, _ := namespace(t)
	b2 := "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=send;SharedAccessKey=bm90LW1hbmFnZQ==;UseDevelopmentEmulator=true"
	mgr := manager(t, m, b2)
	_, err := mgr.Provision(t.Context(), alexTopic, []string{"home"}, true)
	var denied *servicebus.ManageDeniedError
	if !errors.As(err, &denied) || denied.Topic != alexTopic || denied.Subscriptions[0] != "home" {
		t.Fatalf("got %v", err)
	}
	if strings.Contains(err.Error(), "bm90LW1hbmFnZQ") {
		t.Error("the error repeats the key")
	}
}

func TestAtMostTwelveRules(t *testing.T) {
	_, m, cs := namespace(t)
	ctx := t.Context()
	mgr := manager(t, m, cs)
	if _, err := mgr.Provision(ctx, alexTopic, nil, false); err != nil {
		t.Fatal(err)
	}
	fillRules(t, m, cs, alexTopic, 12) // someone else's rules fill the topic
	if _, err := mgr.Provision(ctx, alexTopic, nil, true); !errors.Is(err, servicebus.ErrTooManyRules) {
		t.Fatalf("got %v, want ErrTooManyRules", err)
	}
}

// fillRules gives topic n Listen rules through the management API.
func fillRules(t *testing.T, m *sbtest.Management, cs, topic string, n int) {
	t.Helper()
	c := sbtest.AdminClient(t, cs, m)
	got, err := c.GetTopic(t.Context(), topic, nil)
	if err != nil || got == nil {
		t.Fatal(err)
	}
	props := got.TopicProperties
	for i := range n {
		name, key := fmt.Sprintf("other-%d", i), "a2V5LWtleS1rZXk="
		props.AuthorizationRules = append(props.AuthorizationRules, admin.AuthorizationRule{
			KeyName: &name, PrimaryKey: &key, AccessRights: []admin.AccessRight{admin.AccessRightListen}})
	}
	if _, err := c.UpdateTopic(t.Context(), topic, props, nil); err != nil {
		t.Fatal(err)
	}
}
