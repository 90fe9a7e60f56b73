package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/cocmd/cocmd/client"
	"github.com/cocmd/cocmd/client/mediasource"
)

// A viewer asks for the stage and joins it once a host accepts. The token
// comes from the REST API (POST /v1/meetings/{id}/participants).
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := client.Join(ctx, "http://localhost:8080", "v1.…", nil)
	if err != nil {
		log.Fatal(err) // errors.Is(err, client.ErrUnauthenticated) for a bad token
	}
	defer m.Close()

	if err := m.Stage.RequestAccess(ctx); err != nil {
		log.Fatal(err)
	}
	for e := range m.Events() {
		switch e := e.(type) {
		case client.StageRequestApproved:
			if err := m.Stage.Join(ctx); err != nil {
				log.Fatal(err)
			}
		case client.StageRequestRejected:
			fmt.Println("the host said no:", e.Reason)
			return
		case client.StageStatusUpdate:
			fmt.Println("my status:", e.Old, "→", e.New)
		case client.PeerStageStatusUpdate:
			fmt.Println(e.Participant.Name, "is now", e.New)
		case client.Closed:
			fmt.Println("left the meeting:", e.Err)
		}
	}
}

// A host accepts the oldest pending request and kicks someone off the stage.
func ExampleStage_GrantAccess() {
	ctx := context.Background()
	host, err := client.Join(ctx, "http://localhost:8080", "v1.…", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer host.Close()
	reqs, err := host.Stage.GetAccessRequests(ctx)
	if err != nil || len(reqs) == 0 {
		return
	}
	err = host.Stage.GrantAccess(ctx, reqs[0].UserID)
	if errors.Is(err, client.ErrStageFull) {
		fmt.Println("no room on stage: kick someone first")
	}
	var batch *client.BatchError
	if errors.As(err, &batch) {
		for _, f := range batch.Failed {
			fmt.Println(f.UserID, f.Err)
		}
	}
	_ = host.Stage.Kick(ctx, "user-42")
}

// On stage, publish a clip from a file; everyone subscribed receives it.
func ExampleMedia_Publish() {
	ctx := context.Background()
	m, err := client.Join(ctx, "http://localhost:8080", "v1.…", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	if err := m.Stage.Join(ctx); err != nil { // ALLOWED, or accepted by a host
		log.Fatal(err)
	}
	cam, err := mediasource.OpenIVF("../shared/media/testsrc-640x360-30fps-vp8.ivf")
	if err != nil {
		log.Fatal(err)
	}
	go cam.Play(ctx, true)
	if err := m.Media.Publish(ctx, cam.LocalTrack(client.SourceCamera)); err != nil {
		log.Fatal(err) // client.ErrInvalidStageStatus off stage
	}
	for e := range m.Events() {
		if s, ok := e.(client.PublishingStopped); ok {
			fmt.Println("the server stopped our tracks:", s.Reason) // "stage" after a kick
			return
		}
	}
}

// Receive everyone on stage, with the participant each track belongs to.
func ExampleMedia_Subscribe() {
	ctx := context.Background()
	m, err := client.Join(ctx, "http://localhost:8080", "v1.…", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	if err := m.Media.Subscribe(ctx); err != nil {
		log.Fatal(err)
	}
	for e := range m.Events() {
		switch e := e.(type) {
		case client.TrackAdded:
			fmt.Println(e.Track.UserID, e.Track.Source, e.Track.Codec().MimeType)
			go func() {
				for {
					if _, _, err := e.Track.ReadRTP(); err != nil {
						return // the track ended
					}
				}
			}()
		case client.TrackRemoved:
			fmt.Println(e.Track.UserID, "left the stage")
		}
	}
}
