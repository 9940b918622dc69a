;;; dgls.el --- Diffusion code infilling with the dgls language server  -*- lexical-binding: t; -*-

;; Version: 0.1.0
;; Package-Requires: ((emacs "28.1"))
;; Keywords: languages, tools, convenience
;; URL: https://github.com/dgls/dgls

;;; Commentary:

;; dgls is a language server that infills code with a bidirectional diffusion model.
;; This file connects it to Emacs through eglot (built in since Emacs 29, `elpa-eglot'
;; on Debian's Emacs 28) or lsp-mode, and adds three commands:
;;
;;   `dgls-infill-selection'   C-c d i  the region, or at point without one
;;   `dgls-rewrite-selection'  C-c d r  regenerate the region
;;   `dgls-complete-here'      C-c d c  infill at point
;;   `dgls-inline-complete'    C-c d g  ghost text (lsp-mode >= 9.0.1 only)
;;
;; They ask the server to run `dgls.infillSelection' / `dgls.rewriteSelection' /
;; `dgls.completeHere'; the server answers with `workspace/applyEdit'.  Its code actions
;; ("Infill selection", "Rewrite selection", "Complete here") appear in
;; `eglot-code-actions' / `lsp-execute-code-action' too.
;;
;; Eglot:     (require 'dgls) (dgls-eglot-setup)   then M-x eglot in a Python buffer.
;; lsp-mode:  (require 'dgls) (dgls-lsp-setup)     then M-x lsp (dgls runs as an add-on
;;            beside your usual server; inline ghost text with lsp-mode >= 9.0.1).

;;; Code:

(require 'cl-lib)

(defgroup dgls nil
  "Code infilling with the dgls language server."
  :group 'tools
  :prefix "dgls-")

(defcustom dgls-server-command '("dgls" "serve")
  "Command line that starts the server on stdio."
  :type '(repeat string))

(defcustom dgls-major-modes
  '(python-mode python-ts-mode js-mode js-ts-mode typescript-mode typescript-ts-mode
    go-mode go-ts-mode rust-mode rust-ts-mode c-mode c-ts-mode c++-mode c++-ts-mode
    java-mode java-ts-mode lua-mode sh-mode bash-ts-mode)
  "Major modes whose buffers dgls serves."
  :type '(repeat symbol))

(defcustom dgls-model nil
  "Checkpoint directory or model id; nil for the server's embedded default."
  :type '(choice (const :tag "Default" nil) string))

(defcustom dgls-device nil
  "Torch device such as \"cpu\" or \"cuda\"; nil for automatic."
  :type '(choice (const :tag "Automatic" nil) string))

(defcustom dgls-dtype nil
  "Model dtype such as \"float32\"; nil for automatic."
  :type '(choice (const :tag "Automatic" nil) string))

(defcustom dgls-max-span-tokens nil
  "Largest span in tokens one infill may generate; nil for the server default."
  :type '(choice (const :tag "Default" nil) integer))

(defcustom dgls-steps nil
  "Denoising steps per infill; nil for the model's default."
  :type '(choice (const :tag "Default" nil) integer))

(defcustom dgls-debounce-ms nil
  "Server-side wait after a keystroke before an inline completion; nil for default."
  :type '(choice (const :tag "Default" nil) number))

(defcustom dgls-log-level nil
  "Server log level: \"off\", \"error\", \"warning\", \"info\" or \"debug\"."
  :type '(choice (const :tag "Default" nil) string))

(defun dgls-settings ()
  "The server's \"dgls\" settings section, as a plist of the options that are set."
  (let (plist)
    (pcase-dolist (`(,key . ,value)
                   `((:model . ,dgls-model) (:device . ,dgls-device) (:dtype . ,dgls-dtype)
                     (:maxSpanTokens . ,dgls-max-span-tokens) (:steps . ,dgls-steps)
                     (:debounceMs . ,dgls-debounce-ms) (:logLevel . ,dgls-log-level)))
      (when value
        (setq plist (plist-put plist key value))))
    (or plist (make-hash-table))))

;;;; Status (the server's dgls/status notification)

(defvar dgls-status nil
  "Last status from the server, as (STATE . MESSAGE); STATE is a string.")

(defun dgls--set-status (state message)
  "Remember STATE and MESSAGE from dgls/status and refresh the mode lines."
  (setq dgls-status (cons state (or message "")))
  (force-mode-line-update t))

(defun dgls-mode-line ()
  "Mode-line text for the server status."
  (when dgls-status
    (propertize (format " dgls:%s" (car dgls-status))
                'help-echo (cdr dgls-status)
                'face (and (equal (car dgls-status) "error") 'error))))

;;;; Commands

(declare-function eglot-current-server "eglot")
(declare-function object-of-class-p "eieio")
(declare-function jsonrpc-request "jsonrpc")
(declare-function eglot--pos-to-lsp-position "eglot")
(declare-function eglot--VersionedTextDocumentIdentifier "eglot")
(declare-function eglot--signal-textDocument/didChange "eglot")
(declare-function lsp-request-async "lsp-mode")
(declare-function lsp--versioned-text-document-identifier "lsp-mode")
(declare-function lsp--point-to-position "lsp-mode")
(declare-function lsp-find-workspace "lsp-mode")
(defvar eglot-confirm-server-initiated-edits)
(defvar eglot--managed-mode)
(defvar lsp-mode)
(defvar lsp--cur-workspace)
(defvar lsp--buffer-workspaces)

(defun dgls--eglot-p ()
  "Non-nil if a dgls eglot server manages this buffer."
  (let ((server (and (bound-and-true-p eglot--managed-mode) (eglot-current-server))))
    (and server (object-of-class-p server 'dgls-eglot-server))))

(defun dgls--lsp-p ()
  "Non-nil if a dgls lsp-mode workspace serves this buffer."
  (and (bound-and-true-p lsp-mode)
       (lsp-find-workspace 'dgls nil)))

(defcustom dgls-command-timeout 120
  "Seconds a dgls command may take before Emacs stops waiting for it."
  :type 'number)

(defun dgls--field (object key)
  "Field KEY (a keyword) of a JSON OBJECT parsed as a plist or a hash table."
  (if (hash-table-p object)
      (gethash (substring (symbol-name key) 1) object)
    (and (listp object) (plist-get object key))))

(defun dgls--report (result)
  "Say why the server did not apply its edit, if RESULT says so."
  (when (memq (dgls--field result :applied) '(:json-false :false))
    (message "dgls: no edit (%s)"
             (or (dgls--field result :failureReason) "nothing to insert"))))

(defun dgls--execute (command beg end)
  "Ask the server to run COMMAND on BEG..END; it applies the edit itself."
  (message "dgls: %s..." command)
  (cond
   ((dgls--eglot-p)
    (eglot--signal-textDocument/didChange)
    (let* ((range (list :start (eglot--pos-to-lsp-position beg)
                        :end (eglot--pos-to-lsp-position end)))
           (args (vector (list :textDocument (eglot--VersionedTextDocumentIdentifier)
                               :range range)))
           ;; The user asked for this edit: apply it without a y-or-n-p.  The server
           ;; sends workspace/applyEdit before it answers, i.e. inside this binding.
           (eglot-confirm-server-initiated-edits nil))
      (dgls--report
       (jsonrpc-request (eglot-current-server) :workspace/executeCommand
                        (list :command command :arguments args)
                        :timeout dgls-command-timeout))))
   ((dgls--lsp-p)
    (let* ((workspace (lsp-find-workspace 'dgls nil))
           ;; Send to the dgls workspace only, not to every server of the buffer.
           (lsp--cur-workspace workspace)
           (lsp--buffer-workspaces (list workspace))
           (range (list :start (lsp--point-to-position beg)
                        :end (lsp--point-to-position end))))
      (lsp-request-async "workspace/executeCommand"
                         (list :command command
                               :arguments (vector (list :textDocument
                                                        (lsp--versioned-text-document-identifier)
                                                        :range range)))
                         #'dgls--report
                         :error-handler (lambda (err) (message "dgls: %s failed: %S" command err))
                         :mode 'detached)))
   (t (user-error "No dgls server manages this buffer (M-x eglot or M-x lsp first)"))))

(defun dgls-complete-here ()
  "Infill at point, from the text before and after it."
  (interactive)
  (dgls--execute "dgls.completeHere" (point) (point)))

(defun dgls-infill-selection (beg end)
  "Infill the region BEG..END, or at point when no region is active."
  (interactive (if (use-region-p)
                   (list (region-beginning) (region-end))
                 (list (point) (point))))
  (if (= beg end)
      (dgls--execute "dgls.completeHere" beg beg)
    (dgls--execute "dgls.infillSelection" beg end))
  (deactivate-mark))

(defun dgls-rewrite-selection (beg end)
  "Regenerate the region BEG..END in place."
  (interactive (if (use-region-p)
                   (list (region-beginning) (region-end))
                 (user-error "Select the code to rewrite first")))
  (dgls--execute "dgls.rewriteSelection" beg end)
  (deactivate-mark))

(defvar dgls-mode-map
  (let ((map (make-sparse-keymap)))
    (define-key map (kbd "C-c d i") #'dgls-infill-selection)
    (define-key map (kbd "C-c d r") #'dgls-rewrite-selection)
    (define-key map (kbd "C-c d c") #'dgls-complete-here)
    (define-key map (kbd "C-c d g") #'dgls-inline-complete)
    map)
  "Keys of `dgls-mode'.")

;;;###autoload
(define-minor-mode dgls-mode
  "Keys for dgls commands and the server status in the mode line.
Turned on in buffers that a dgls server manages."
  :lighter (:eval (dgls-mode-line))
  :keymap dgls-mode-map)

;;;; Eglot

(declare-function eglot-lsp-server "eglot")
(declare-function dgls-eglot-server--eieio-childp "dgls")
(defvar eglot-server-programs)

(with-eval-after-load 'eglot
  (defclass dgls-eglot-server (eglot-lsp-server) ()
    :documentation "The dgls language server.")

  (cl-defmethod eglot-initialization-options ((_server dgls-eglot-server))
    (list :dgls (dgls-settings)))

  (cl-defmethod eglot-handle-notification
    ((_server dgls-eglot-server) (_method (eql dgls/status)) &key state message
     &allow-other-keys)
    (dgls--set-status state message))

  (add-hook 'eglot-managed-mode-hook #'dgls--eglot-managed))

(defun dgls--eglot-managed ()
  "Turn `dgls-mode' on or off as eglot starts or stops managing the buffer."
  (dgls-mode (if (and (bound-and-true-p eglot--managed-mode) (dgls--eglot-p)) 1 -1)))

;;;###autoload
(defun dgls-eglot-setup ()
  "Make eglot use dgls for `dgls-major-modes'.
Eglot runs one server per buffer, so this replaces the usual server there;
use lsp-mode (`dgls-lsp-setup') to run dgls beside it."
  (interactive)
  (require 'eglot)
  (add-to-list 'eglot-server-programs
               (cons dgls-major-modes (cons 'dgls-eglot-server dgls-server-command))))

;;;; lsp-mode

(declare-function lsp-register-client "lsp-mode")
(declare-function make-lsp-client "lsp-mode")
(declare-function lsp-stdio-connection "lsp-mode")
(declare-function lsp-activate-on "lsp-mode")
(declare-function lsp-inline-completion-display "lsp-inline-completion")
(declare-function lsp-inline-completion-mode "lsp-inline-completion")

(defun dgls--lsp-status (_workspace params)
  "Handle dgls/status PARAMS (a hash table) from lsp-mode."
  (dgls--set-status (gethash "state" params) (gethash "message" params)))

(defun dgls-inline-complete ()
  "Show dgls ghost text at point (lsp-mode >= 9.0.1)."
  (interactive)
  (if (fboundp 'lsp-inline-completion-display)
      (lsp-inline-completion-display)
    (user-error "This lsp-mode has no inline completion; try `dgls-complete-here'")))

;;;###autoload
(defun dgls-lsp-setup ()
  "Register dgls with lsp-mode as an add-on server for `dgls-major-modes'."
  (interactive)
  (require 'lsp-mode)
  (require 'lsp-inline-completion nil t)
  (let ((handlers (make-hash-table :test #'equal)))
    (puthash "dgls/status" #'dgls--lsp-status handlers)
    (lsp-register-client
     (make-lsp-client
      :new-connection (lsp-stdio-connection (lambda () dgls-server-command))
      :major-modes dgls-major-modes
      :add-on? t
      :priority -2
      :server-id 'dgls
      :initialization-options (lambda () (list :dgls (dgls-settings)))
      :notification-handlers handlers
      :initialized-fn (lambda (_workspace) nil))))
  (add-hook 'lsp-after-open-hook #'dgls--lsp-opened))

(defun dgls--lsp-opened ()
  "Turn on `dgls-mode' (and inline completion, when available) in lsp-mode buffers."
  (when (dgls--lsp-p)
    (dgls-mode 1)
    (when (fboundp 'lsp-inline-completion-mode)
      (lsp-inline-completion-mode 1))))

(provide 'dgls)
;;; dgls.el ends here
