/*
 * course-kit-validate: the course kit's verdict in nbgrader's Validate dialog.
 *
 * For a notebook that passes, nbgrader's Validate button (notebook toolbar and Assignment
 * List) opens a dialog whose message, <div id="validation-message" class="validation-success">,
 * holds one paragraph: "Success! Your notebook passes all the tests." That reads as full marks.
 * The validation ran in the Jupyter server with the students' nbgrader_config.py, which recorded
 * what the pass means (course_utils/validation.py, verdict()); the server extension
 * course_utils/validate_button.py serves it at <base_url>/course-kit/validation-verdict.
 * This plugin watches for that dialog, asks for the verdict and puts it in place of the
 * paragraph's text. The dialog keeps its classes (tools still see validation-success); its
 * message gets data-course-verdict="shown", or "none" when there is no verdict to show
 * (endpoint missing or failing, or no recorded pass), and then nbgrader's text stays.
 *
 * Why hand-written, with no build step: a JupyterLab 4 prebuilt ("federated") extension is
 * a module-federation container, window._JUPYTERLAB[<name>] with init(shareScope) and
 * get(module). Webpack writes that container so that an extension can share JupyterLab's
 * own modules (@jupyterlab/apputils, ...). This plugin needs none of them: the application
 * object it is activated with gives it the server settings, and the rest is the DOM and
 * fetch. So the container fits in a few readable lines, and neither the kit's maintainers
 * nor students need node, npm or webpack. JupyterLab's loader (jupyterlab/staging/
 * bootstrap.js and index.js) loads this file from package.json's jupyterlab._build.load,
 * awaits init(), then get("./extension"), calls the factory and reads its default export.
 *
 * Browsers may keep a copy of a file whose name did not change: when you edit this file,
 * rename it (verdict-1 -> verdict-2) and the "load" entry of ../package.json with it.
 */
(function () {
  'use strict';

  const NAME = 'course-kit-validate';
  const ROUTE = 'course-kit/validation-verdict';
  const SUCCESS = '#validation-message.validation-success';
  const MARK = 'data-course-verdict';

  /** GET the verdict the way JupyterLab talks to its server: its settings, token and XSRF cookie. */
  async function fetchVerdict(settings) {
    const base = settings.baseUrl.endsWith('/') ? settings.baseUrl : settings.baseUrl + '/';
    const RequestClass = settings.Request || window.Request;
    const request = new RequestClass(base + ROUTE, Object.assign({}, settings.init, {method: 'GET', cache: 'no-store'}));
    if (settings.token) {
      request.headers.append('Authorization', 'token ' + settings.token);
    }
    const xsrf = document.cookie.split('; ').find(pair => pair.startsWith('_xsrf='));
    if (xsrf) {
      request.headers.append('X-XSRFToken', decodeURIComponent(xsrf.slice('_xsrf='.length)));
    }
    const response = await (settings.fetch || window.fetch).call(null, request);
    if (!response.ok) {
      throw new Error(`${ROUTE}: HTTP ${response.status}`);
    }
    const answer = await response.json();
    return typeof answer.verdict === 'string' && answer.verdict ? answer.verdict : null;
  }

  /** Put the verdict in place of nbgrader's success text in ``message`` (once per dialog). */
  async function showVerdict(message, settings) {
    message.setAttribute(MARK, 'pending');
    let verdict = null;
    try {
      verdict = await fetchVerdict(settings);
    } catch (error) {
      console.warn(`${NAME}: no verdict, nbgrader's text stays:`, error);
    }
    const paragraph = message.querySelector('p');
    if (verdict && paragraph) {
      paragraph.textContent = verdict;
      message.setAttribute(MARK, 'shown');
    } else {
      message.setAttribute(MARK, 'none');
    }
  }

  /** Success messages in ``node`` (itself included) that have not been handled yet. */
  function successMessages(node) {
    if (node.nodeType !== Node.ELEMENT_NODE) {
      return [];
    }
    const found = node.matches(SUCCESS) ? [node] : Array.from(node.querySelectorAll(SUCCESS));
    return found.filter(message => !message.hasAttribute(MARK));
  }

  const plugin = {
    id: NAME + ':verdict',
    description: "Shows the course kit's verdict in nbgrader's Validate dialog instead of its \"Success!\".",
    autoStart: true,
    activate: app => {
      const settings = app.serviceManager.serverSettings;
      // JupyterLab's dialogs are attached to document.body, with their content already built.
      const observer = new MutationObserver(records => {
        for (const record of records) {
          for (const node of record.addedNodes) {
            successMessages(node).forEach(message => void showVerdict(message, settings));
          }
        }
      });
      observer.observe(document.body, {childList: true});
    }
  };

  const modules = {'./extension': () => ({__esModule: true, default: plugin})};

  window._JUPYTERLAB = window._JUPYTERLAB || {};
  window._JUPYTERLAB[NAME] = {
    // No shared modules to offer or to take: nothing to initialise.
    init: shareScope => undefined,
    get: module => modules[module]
      ? Promise.resolve(modules[module])
      : Promise.reject(new Error(`${NAME} has no module ${module}`))
  };
})();
