package agentmesh

import (
	agentmeshv1 "github.com/agentmesh/agentmesh/sdk/go/gen/agentmesh/v1"
)

const (
	// Frames one stream message carries at most; the rest go in the next one.
	maxFramesPerMessage = 256
	// Frames waiting for the stream; a handler streaming faster than the sidecar
	// reads blocks in Send instead of growing memory.
	frameQueueLength = 1024
	// Liveness answers waiting; a writer this far behind is stuck, and a missing
	// PONG is then the truth.
	controlQueueLength = 64
)

// frameWriter owns the sending side of one stream (gRPC allows one sender at a
// time). Frames ready at one moment travel in one message, and liveness
// answers (PONG) jump the queue, so a busy handler never delays them.
type frameWriter struct {
	send    func([]*agentmeshv1.CallFrame) error
	control chan *agentmeshv1.CallFrame
	frames  chan *agentmeshv1.CallFrame
	// flush asks the writer to send what is queued and half-close the stream.
	flush chan struct{}
	// done closes when the stream is gone (or the writer stopped).
	done chan struct{}
	// exited closes when the writer goroutine returned.
	exited chan struct{}
	err    error
}

func newFrameWriter(send func([]*agentmeshv1.CallFrame) error, closeSend func() error, done chan struct{}) *frameWriter {
	writer := &frameWriter{
		send:    send,
		control: make(chan *agentmeshv1.CallFrame, controlQueueLength),
		frames:  make(chan *agentmeshv1.CallFrame, frameQueueLength),
		flush:   make(chan struct{}),
		done:    done,
		exited:  make(chan struct{}),
	}
	go writer.loop(closeSend)
	return writer
}

// push queues a frame, waiting while the queue is full; false once the stream is gone.
func (w *frameWriter) push(frame *agentmeshv1.CallFrame) bool {
	select {
	case w.frames <- frame:
		return true
	case <-w.done:
		return false
	}
}

// pushControl queues a liveness answer without ever blocking the reader.
func (w *frameWriter) pushControl(frame *agentmeshv1.CallFrame) {
	select {
	case w.control <- frame:
	default:
	}
}

// closeAfterQueued sends what is queued, then half-closes the stream.
func (w *frameWriter) closeAfterQueued() {
	select {
	case w.flush <- struct{}{}:
	case <-w.exited:
	}
}

func (w *frameWriter) loop(closeSend func() error) {
	defer close(w.exited)
	for {
		var batch []*agentmeshv1.CallFrame
		flushing := false
		select {
		case frame := <-w.control:
			batch = append(batch, frame)
		case frame := <-w.frames:
			batch = append(batch, frame)
		case <-w.flush:
			flushing = true
		case <-w.done:
			return
		}
		batch = w.gather(batch)
		if len(batch) > 0 {
			if err := w.send(batch); err != nil {
				w.err = err
				return
			}
		}
		if flushing {
			for {
				batch = w.gather(nil)
				if len(batch) == 0 {
					break
				}
				if err := w.send(batch); err != nil {
					w.err = err
					return
				}
			}
			w.err = closeSend()
			return
		}
	}
}

// gather adds whatever else is ready now, liveness answers first.
func (w *frameWriter) gather(batch []*agentmeshv1.CallFrame) []*agentmeshv1.CallFrame {
	for len(batch) < maxFramesPerMessage {
		select {
		case frame := <-w.control:
			batch = append([]*agentmeshv1.CallFrame{frame}, batch...)
			continue
		default:
		}
		select {
		case frame := <-w.frames:
			batch = append(batch, frame)
		default:
			return batch
		}
	}
	return batch
}
