package main

// The simulator has no VM questions (a VM that stopped to ask its user, as
// ESX does when a datastore is full) and no guest whose VMware Tools start
// or stop: these endpoints change a VM so, through the same property update
// as any other change, so that a PropertyCollector client sees
// runtime.question or guest.toolsRunningStatus change as it would on ESX.
//
//	POST /hn/question  name=VM&id=ID&text=TEXT&message=MSGID&argument=ARG
//	                   sets the VM's pending question (message: its
//	                   message's id, argument: that message's argument)
//	DELETE /hn/question?name=VM  clears it, as an answer would
//	POST /hn/tools     name=VM&status=STATUS
//	                   sets guest.toolsRunningStatus (guestToolsRunning, ...)
//
// Loopback only, like the simulator; a test's own, never a vSphere API.

import (
	"net/http"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

func handleGuests(mux *http.ServeMux) {
	mux.HandleFunc("/hn/tools", func(w http.ResponseWriter, r *http.Request) {
		vm := formVM(w, r)
		if vm == nil {
			return
		}
		simulator.Map.WithLock(vm, func() {
			simulator.Map.Update(vm, []types.PropertyChange{
				{Name: "guest.toolsRunningStatus", Val: r.Form.Get("status")},
			})
		})
		w.WriteHeader(http.StatusNoContent)
	})
	handleQuestions(mux)
}

// formVM parses the request's form and returns the VM it names, or answers an error and nil.
func formVM(w http.ResponseWriter, r *http.Request) *simulator.VirtualMachine {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return nil
	}
	vm := findVM(r.Form.Get("name"))
	if vm == nil {
		http.Error(w, "no VM named "+r.Form.Get("name"), http.StatusNotFound)
	}
	return vm
}

func handleQuestions(mux *http.ServeMux) {
	mux.HandleFunc("/hn/question", func(w http.ResponseWriter, r *http.Request) {
		vm := formVM(w, r)
		if vm == nil {
			return
		}
		var question *types.VirtualMachineQuestionInfo
		switch r.Method {
		case http.MethodPost:
			message := types.VirtualMachineMessage{Id: r.Form.Get("message"), Text: r.Form.Get("text")}
			if argument := r.Form.Get("argument"); argument != "" {
				message.Argument = []types.AnyType{argument}
			}
			question = &types.VirtualMachineQuestionInfo{
				Id:   r.Form.Get("id"),
				Text: r.Form.Get("text"),
				Choice: types.ChoiceOption{ChoiceInfo: []types.BaseElementDescription{
					&types.ElementDescription{Key: "0", Description: types.Description{Label: "Retry"}},
					&types.ElementDescription{Key: "1", Description: types.Description{Label: "Cancel"}},
				}},
				Message: []types.VirtualMachineMessage{message},
			}
		case http.MethodDelete:
		default:
			http.Error(w, "POST or DELETE", http.StatusMethodNotAllowed)
			return
		}
		simulator.Map.WithLock(vm, func() {
			if question != nil {
				simulator.Map.Update(vm, []types.PropertyChange{{Name: "runtime.question", Val: question}})
				return
			}
			// Update cannot assign a nil: clear the field, then announce a change
			// below it (no such property: nothing assigned), which a filter on
			// runtime.question reports with the field's value now.
			vm.Runtime.Question = nil
			simulator.Map.Update(vm, []types.PropertyChange{{Name: "runtime.question.answered"}})
		})
		w.WriteHeader(http.StatusNoContent)
	})
}

func findVM(name string) *simulator.VirtualMachine {
	for _, entity := range simulator.Map.All("VirtualMachine") {
		if vm, ok := entity.(*simulator.VirtualMachine); ok && vm.Name == name {
			return vm
		}
	}
	return nil
}
