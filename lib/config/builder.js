/* builder.js - the config builder page of esg-config --builder: a form made
 * from the page's esg-schema (config.c esg_config_schema: the fields of each
 * object, their types, values and ranges; esg-attr's methods and their
 * parameters), the config it makes as JSON (copy or download), and a check
 * as you type that follows esg_config_load (lib/config/config.c) step by step
 * with its messages -- all but what needs the disk: files, globs. */
(function(){'use strict';
var S=JSON.parse(document.getElementById('esg-schema').textContent);
var FIELD={},METHOD={},ALIAS={};
S.fields.forEach(function(f){FIELD[f.object+'\u0001'+f.key]=f;});
S.methods.forEach(function(m){METHOD[m.name]=m;});
S.aliases.forEach(function(a){ALIAS[a.name]=a;});
function fieldOf(obj,key){return FIELD[obj+'\u0001'+key];}
function choices(obj,key){return fieldOf(obj,key).choices;}

/* ---- the check: esg_config_load, in its order, with its messages ---------- */
function Bad(field,msg){this.field=field;this.msg=msg;}
function bad(field,msg){throw new Bad(field,msg);}
function has(o,k){return Object.prototype.hasOwnProperty.call(o,k);}
function isObj(v){return v!==null&&typeof v==='object'&&!Array.isArray(v);}
function fk(parent,key){return parent?parent+'.'+key:key;}
/* C's %.{p}g */
function g(d,p){p=p||6;if(d===0)return '0';if(!isFinite(d))return isNaN(d)?'nan':d>0?'inf':'-inf';
 var e=d.toExponential(p-1).split('e'),ex=+e[1],s;
 if(ex<-4||ex>=p){s=e[0];if(s.indexOf('.')>=0)s=s.replace(/0+$/,'').replace(/\.$/,'');
  return s+'e'+(ex<0?'-':'+')+(Math.abs(ex)<10?'0':'')+Math.abs(ex);}
 s=d.toFixed(Math.max(0,p-1-ex));if(s.indexOf('.')>=0)s=s.replace(/0+$/,'').replace(/\.$/,'');return s;}
function numText(d){if(d===Math.floor(d)&&Math.abs(d)<1e15)return d.toFixed(0);
 for(var p=1;p<=17;p++){var t=g(d,p);if(parseFloat(t)===d)return t;}return String(d);}
function checkKeys(o,field,known){if(!isObj(o))bad(field,'must be an object');
 Object.keys(o).forEach(function(k){if(known.indexOf(k)<0)bad(fk(field,k),'unknown field (known here: '+known.join(', ')+')');});}
function getStr(o,key,parent,req){var f=fk(parent,key);if(!has(o,key)){if(req)bad(f,'missing (required)');return undefined;}
 if(typeof o[key]!=='string')bad(f,'must be a string');return o[key];}
function getNum(o,key,parent,obj){var f=fk(parent,key),spec=fieldOf(obj,key);if(!has(o,key))return undefined;
 var d=o[key];if(typeof d!=='number')bad(f,'must be a number');
 if(!isFinite(d)||d<spec.lo||d>spec.hi)bad(f,g(d)+' is out of range ['+g(spec.lo)+', '+g(spec.hi)+']');
 if(spec.type==='int'&&d!==Math.floor(d))bad(f,g(d)+' must be a whole number');return d;}
/* esg_memory_parse: a size (K M G T, at least 64M) or a share up to 100% */
function memorySize(f,t){var m=/^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?/.exec(t),v=m?parseFloat(m[0]):NaN;
 if(!m||!isFinite(v)||v<=0)bad(f,"'"+t+"' is not a size (6G, 500M, 50%)");var end=t.slice(m[0].length);
 if(end==='%'){if(v>100)bad(f,t+' is more than 100%');return;}
 var U={'':1,K:1024,M:1048576,G:1073741824,T:1099511627776},unit=U.hasOwnProperty(end)?U[end]:0;
 if(!unit)bad(f,"'"+t+"' is not a size (6G, 500M, 50%: units K M G T, 1024-based)");
 if(v*unit<67108864)bad(f,t+' is less than 64M');}
function getBool(o,key,parent){if(!has(o,key))return undefined;if(typeof o[key]!=='boolean')bad(fk(parent,key),'must be true or false');return o[key];}
function oneOf(field,v,known){if(known.indexOf(v)<0)bad(field,"unknown value '"+v+"' (known: "+known.join(', ')+')');}
function enumOpt(o,key,parent,obj){var v=getStr(o,key,parent,0);if(v!==undefined)oneOf(fk(parent,key),v,choices(obj,key));}
var SHELL="$'\"`\\;&|<>()#*?[]{}~!^";
function safeArg(field,s){if(!s)bad(field,'must not be empty');
 for(var i=0;i<s.length;i++){var c=s[i];if(c.charCodeAt(0)<=32||SHELL.indexOf(c)>=0)
  bad(field,"'"+s+"': the character '"+(c==='\t'||c==='\n'?' ':c)+"' can't be passed through Make and the shell safely");}}
function safePath(field,s){safeArg(field,s);for(var i=0;i<s.length;i++)if(':%='.indexOf(s[i])>=0)
 bad(field,"'"+s+"': the character '"+s[i]+"' is not allowed in a path Make handles");}
function safeName(field,s){if(!s)bad(field,'must not be empty');
 if(s[0]==='.'||s[0]==='-')bad(field,"'"+s+"' must start with a letter, digit or '_'");
 if(!/^[A-Za-z0-9._-]*$/.test(s))bad(field,"'"+s+"': names may hold letters, digits, '.', '_' and '-' only");}
function scalarText(v,field){
 if(typeof v==='number')return numText(v);if(typeof v==='boolean')return v?'true':'false';
 if(typeof v==='string'){safeArg(field,v);return v;}
 if(Array.isArray(v)){if(v.some(function(e){return typeof e!=='number';}))bad(field,'a list here must hold numbers only');
  if(!v.length)bad(field,'must not be an empty list');return v.map(numText).join(',');}
 bad(field,'must be a number, string, boolean or list of numbers');}
function nameList(o,key,parent){var f=fk(parent,key);if(!has(o,key))return undefined;var a=o[key];
 if(!Array.isArray(a))bad(f,'must be a list of strings');
 a.forEach(function(e,i){if(typeof e!=='string')bad(f+'['+i+']','must be a string');safeArg(f+'['+i+']',e);});return a;}
function metricList(o,key,parent,known){var f=fk(parent,key),v=nameList(o,key,parent);if(v===undefined)return undefined;
 if(!v.length)bad(f,'must not be empty (leave the field out instead)');v.forEach(function(x,i){oneOf(f+'['+i+']',x,known);});return v;}
/* esg_method_find and esg_params_resolve (lib/attr/registry.c) */
function findMethod(name){if(METHOD[name])return {m:METHOD[name]};var a=ALIAS[name];
 if(a)return {m:METHOD[a.method],alias:a};throw new Error("unknown method '"+name+"' (see --list-methods)");}
function spec(m,key){for(var i=0;i<m.params.length;i++)if(m.params[i].key===key)return m.params[i];return null;}
function checkValue(s,v){var x;
 if(s.kind==='int'){if(!/^[+-]?\d+$/.test(v)||Math.abs(parseInt(v,10))>9223372036854775807)
   throw new Error('parameter '+s.key+": '"+v+"' is not an integer");
  x=parseInt(v,10);if(x<s.lo||x>s.hi)throw new Error('parameter '+s.key+': '+x+' is out of range ['+s.lo.toFixed(0)+', '+s.hi.toFixed(0)+']');}
 else if(s.kind==='float'){x=/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(v)?parseFloat(v):NaN;
  if(!isFinite(x))throw new Error('parameter '+s.key+": '"+v+"' is not a finite number");
  if(x<s.lo||x>s.hi)throw new Error('parameter '+s.key+': '+g(x)+' is out of range ['+g(s.lo)+', '+g(s.hi)+']');}
 else if(s.kind==='bool'){if(['true','1','yes','false','0','no'].indexOf(v)<0)
   throw new Error('parameter '+s.key+": '"+v+"' is not a boolean (true or false)");}
 else if(s.kind==='choice'){if(s.choices.split('|').indexOf(v)<0)throw new Error('parameter '+s.key+": '"+v+"' is not one of "+s.choices);}
 else if(s.kind==='method'){if(!METHOD[v]||!METHOD[v].wrappable)throw new Error('parameter '+s.key+": '"+v+"' is not a method noise_tunnel can wrap");}}
function resolve(m,alias,kv){var out={},base=null;
 if(alias&&alias.params)alias.params.split(',').forEach(function(t){var e=t.indexOf('=');out[t.slice(0,e)]=t.slice(e+1);});
 var baseName;kv.forEach(function(p){if(p[0]==='base')baseName=p[1];});
 var bs=spec(m,'base');if(bs){var bv=baseName!==undefined?baseName:bs['default'];checkValue(bs,bv);out.base=bv;base=METHOD[bv];}
 kv.forEach(function(p){var key=p[0];
  if(!key)throw new Error("--param '="+p[1]+"' is not KEY=VALUE");
  if(alias&&spec(m,key)&&has(out,key)&&alias.params.indexOf(key)>=0)throw new Error('parameter '+key+' is fixed by the alias '+alias.name);
  if(key==='base'&&bs)return;
  var s=spec(m,key)||(base&&spec(base,key));
  if(!s){var known=m.params.concat(base?base.params:[]).map(function(q){return q.key;});
   throw new Error("unknown parameter '"+key+"' for method "+m.name+' (parameters: '+(known.length?known.join(', '):'none')+')');}
  checkValue(s,p[1]);out[key]=p[1];});
 return base;}
var STEM=/(\.nii\.gz|\.nii|\.hdr|\.img|\.png|\.npy)$/;
function stem(p){var b=p.replace(/^.*\//,''),m=STEM.exec(b);return m&&b.length>m[0].length?b.slice(0,-m[0].length):b;}
function fillStar(t,star,field){if(t.indexOf('{*}')>=0&&star===null)
 bad(field,"'{*}' needs an image pattern with exactly one '*' (and no '?' or '[')");return star===null?t:t.split('{*}').join(star);}

function check(j){
 var C={inputs:[],models:[],methods:[],globs:false};
 checkKeys(j,'',S.objects['']);
 var output=getStr(j,'output','',1),title=getStr(j,'title','',0),target=getNum(j,'target','','');
 if(has(j,'randomisation')&&!isObj(j.randomisation))bad('randomisation','must be an object');
 safePath('output',output);
 /* jobs */
 if(has(j,'jobs')){var o=j.jobs;checkKeys(o,'jobs',S.objects.jobs);
  getNum(o,'threads','jobs','jobs');getNum(o,'timeout','jobs','jobs');getNum(o,'internal_batch','jobs','jobs');
  var mem=getStr(o,'memory','jobs',0);if(mem!==undefined)memorySize('jobs.memory',mem);
  var dev=nameList(o,'devices','jobs');
  if(dev!==undefined){if(!dev.length)bad('jobs.devices','must not be empty');
   dev.forEach(function(d,i){if(!(d==='cpu'||/^cuda:[0-9]+$/.test(d)))bad('jobs.devices['+i+']',"'"+d+"' is not a device (cpu or cuda:N)");});}}
 /* inputs */
 var a=j.inputs;if(!Array.isArray(a)||!a.length)bad('inputs','must be a non-empty list');
 a.forEach(function(e,i){var f='inputs['+i+']';checkKeys(e,f,S.objects['inputs[]']);
  var image=getStr(e,'image',f,1),mask=getStr(e,'mask',f,0),name=getStr(e,'name',f,0),fi=f+'.image';
  if(!/[*?[]/.test(image)){   /* (esg-config: the file must exist) */
   var nm=name!==undefined?fillStar(name,null,fi+'.name'):stem(image);
   safePath(fi,image);safeName(fi+'.name',nm);
   if(mask!==undefined)safePath(fi+'.mask',fillStar(mask,null,fi+'.mask'));
   C.inputs.push({name:nm,mask:mask!==undefined});}
  else{C.globs=true;   /* expanded by esg-config: checked there */
   var one=(image.split('*').length===2)&&!/[?[]/.test(image);
   if(!one){if(name!==undefined)fillStar(name,null,fi+'.name');if(mask!==undefined)fillStar(mask,null,fi+'.mask');}
   C.inputs.push({name:null,mask:mask!==undefined});}});
 /* load */
 if(has(j,'load')){var L=j.load;checkKeys(L,'load',S.objects.load);
  ['normalise','fit','align','channels','axes'].forEach(function(k){enumOpt(L,k,'load','load');});getBool(L,'nonzero','load');
  ['multiple','percentiles'].forEach(function(k){if(!has(L,k))return;var v=L[k];
   if(typeof v!=='number'&&!Array.isArray(v))bad('load.'+k,'must be a number or a list of numbers');scalarText(v,'load.'+k);});}
 /* models */
 a=j.models;if(!Array.isArray(a)||!a.length)bad('models','must be a non-empty list');
 a.forEach(function(e,i){var f='models['+i+']',fw=f+'.wrap';checkKeys(e,f,S.objects['models[]']);
  var name=getStr(e,'name',f,1),file=getStr(e,'file',f,1);
  safeName(f+'.name',name);safePath(f+'.file',file);   /* (esg-config: the file must exist) */
  if(C.models.indexOf(name)>=0)bad(f+'.name',"model name '"+name+"' is used twice");C.models.push(name);
  if(!has(e,'wrap'))return;var w=e.wrap;checkKeys(w,fw,S.objects['models[].wrap']);
  var red=getStr(w,'reduce',fw,1),mask=getStr(w,'mask',fw,0);oneOf(fw+'.reduce',red,choices('models[].wrap','reduce'));
  enumOpt(w,'activation',fw,'models[].wrap');enumOpt(w,'blend',fw,'models[].wrap');
  ['patch','overlap'].forEach(function(k){if(!has(w,k))return;var v=w[k];
   if(typeof v!=='number'&&!Array.isArray(v))bad(fw+'.'+k,'must be a number or a list');scalarText(v,fw+'.'+k);});
  if(mask!==undefined){if(red!=='fixed-mask')bad(fw+'.mask','a mask is used only by "reduce": "fixed-mask"');safePath(fw+'.mask',mask);}});
 /* methods */
 a=j.methods;if(!Array.isArray(a)||!a.length)bad('methods','must be a non-empty list');
 a.forEach(function(e,i){var f='methods['+i+']';checkKeys(e,f,S.objects['methods[]']);
  var label=getStr(e,'name',f,1),name=getStr(e,'method',f,0),layer=getStr(e,'layer',f,0),channel=getStr(e,'channel',f,0);
  safeName(f+'.name',label);
  if(C.methods.indexOf(label)>=0)bad(f+'.name',"method name '"+label+"' is used twice (give each its own \"name\")");
  var key=name===undefined?f+'.name':f+'.method';if(name===undefined)name=label;
  var fm;try{fm=findMethod(name);}catch(x){bad(key,x.message);}
  C.methods.push(label);
  var m=fm.m,kv=[];
  if(has(e,'params')&&!isObj(e.params))bad(key,'params must be an object');
  Object.keys(e.params||{}).forEach(function(q){var fq=f+'.params.'+q;if(kv.length===32)bad(fq,'too many parameters');
   var t=scalarText(e.params[q],fq);safeArg(fq,q);kv.push([q,t]);});
  var takes=m;try{takes=resolve(m,fm.alias,kv)||m;}catch(x){bad(f+'.params',x.message);}
  if(has(e,'baselines')){if(!Array.isArray(e.baselines))bad(f,'baselines must be a list of strings');
   e.baselines.forEach(function(q,bi){var fq=f+'.baselines['+bi+']';if(typeof q!=='string')bad(fq,'must be a string');safeArg(fq,q);});
   /* (the specs themselves: esg-config) */
   if(!takes.baseline&&e.baselines.length)bad(f,"method '"+name+"' takes no baseline");}
  if(layer!==undefined){if(!m.layer)bad(f+'.layer',"method '"+name+"' takes no layer");safeArg(f+'.layer',layer);}
  else if(m.layer&&!m.layer_optional)bad(f,"method '"+name+"' needs a \"layer\" (see esg-attr --list-layers)");
  if(channel!==undefined)safeArg(f+'.channel',channel);
  getBool(e,'upsample',f);getBool(e,'amp',f);
  ['target','seed','internal_batch','timeout','overlap'].forEach(function(k){getNum(e,k,f,'methods[]');});
  if(has(e,'patch')){if(!Array.isArray(e.patch))bad(f+'.patch','must be a list of patch sizes, e.g. [64, 64, 64]');scalarText(e.patch,f+'.patch');}
  enumOpt(e,'blend',f,'methods[]');});
 function selectMethods(o,key,parent){var v=nameList(o,key,parent);
  (v||[]).forEach(function(x,k){if(C.methods.indexOf(x)<0)bad(fk(parent,key)+'['+k+']',"no method is named '"+x+"' in \"methods\"");});}
 /* randomisation */
 if(has(j,'randomisation')){var R=j.randomisation,F='randomisation';checkKeys(R,F,S.objects.randomisation);
  var model=getStr(R,'model',F,0),as=getStr(R,'as_model',F,0);
  if(model!==undefined&&C.models.indexOf(model)<0)bad('randomisation.model',"no model is named '"+model+"' in \"models\"");
  var md=getStr(R,'mode',F,0);if(md!==undefined)oneOf('randomisation.mode',md,choices(F,'mode'));
  var layers=nameList(R,'layers',F);
  if(layers===undefined)bad('randomisation.layers','missing (required: the layers to randomise, e.g. ["model.dec1", "model.enc1"]; see esg-randomise)');
  if(!layers.length)bad('randomisation.layers','must not be empty');
  getNum(R,'seed',F,F);enumOpt(R,'init',F,F);selectMethods(R,'methods',F);metricList(R,'metrics',F,choices(F,'metrics'));
  var ins=nameList(R,'inputs',F);
  if(!C.globs)(ins||[]).forEach(function(x,k){if(!C.inputs.some(function(n){return n.name===x;}))
   bad('randomisation.inputs['+k+']',"no input is named '"+x+"'");});
  if(as!==undefined){safeName('randomisation.as_model',as);
   if(C.models.indexOf(as)>=0)bad('randomisation.as_model',"'"+as+"' is already the name of a model");C.models.push(as);}}
 /* metrics */
 if(has(j,'metrics')){var X=j.metrics;checkKeys(X,'metrics',S.objects.metrics);
  var gt=metricList(X,'ground_truth','metrics',choices('metrics','ground_truth'));
  metricList(X,'fidelity','metrics',choices('metrics','fidelity'));selectMethods(X,'methods','metrics');
  if(gt&&gt.length&&!C.globs)C.inputs.forEach(function(n){if(!n.mask)bad('metrics.ground_truth',"input '"+n.name+"' has no \"mask\" to score against");});
  (nameList(X,'models','metrics')||[]).forEach(function(x,k){if(C.models.indexOf(x)<0)bad('metrics.models['+k+']',"no model is named '"+x+"'");});
  if(has(X,'params')){if(!isObj(X.params))bad('metrics.params','must be an object');
   Object.keys(X.params).forEach(function(q){scalarText(X.params[q],'metrics.params.'+q);safeArg('metrics.params.'+q,q);});}}
 /* report */
 if(has(j,'report')&&j.report!==false){var P=j.report;checkKeys(P,'report',S.objects.report);
  enumOpt(P,'view','report','report');getNum(P,'zoom','report','report');}
 if(title!==undefined)for(var i=0;i<title.length;i++){var c=title[i];
  if(c==='$'||c==='\\'||c.charCodeAt(0)<32)bad('title',"the character '"+(c.charCodeAt(0)<32?' ':c)+"' is not allowed in a title");}
 return null;}

/* ---- the form ----------------------------------------------------------------- */
var state={output:'out',inputs:[{}],models:[{}],methods:[],load:{},jobs:{},report:{},
 randomisation:{},metrics:{},use_random:false,use_report:true};
var root=document.getElementById('builder'),uid=0;
function el(tag,attrs,kids){var e=document.createElement(tag);
 for(var k in attrs||{})if(attrs[k]!==undefined&&attrs[k]!==null&&attrs[k]!==false)e.setAttribute(k,attrs[k]===true?'':attrs[k]);
 (kids||[]).forEach(function(c){if(c!==null&&c!==undefined)e.appendChild(typeof c==='string'?document.createTextNode(c):c);});return e;}
/* a typed value from text: numbers, true / false, [lists] as JSON; else the text */
function typed(t){t=t.trim();if(t==='')return undefined;
 if(/^(-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?|true|false|\[.*\])$/.test(t)){try{return JSON.parse(t);}catch(x){}}return t;}
function words(t){t=t.trim();return t?t.split(/[\s,]+/).filter(Boolean):undefined;}
function show(v){return v===undefined?'':Array.isArray(v)?(v.every(function(x){return typeof x==='number';})?JSON.stringify(v):v.join(' ')):String(v);}
function setKey(o,k,v){if(v===undefined)delete o[k];else o[k]=v;}
function rangeText(f){return f.lo!==undefined?' ['+g(f.lo)+', '+g(f.hi)+']':'';}

/* One control for field `key` of object kind `obj` held in `o`; `path` is
 * esg-config's name of the field (messages point at it). */
function control(obj,key,o,path){
 var f=fieldOf(obj,key),id='f'+(++uid),type=f?f.type:'json',help=f?f.help:'(a field this page knows by name only: give a JSON value; esg-config checks it)';
 var c,lab=el('label',{'for':id},[key+(f&&f.required?' *':'')]);
 var tip=help+(f&&f.choices&&type==='enum'?' ('+f.choices.join(', ')+')':'')+(f?rangeText(f):'');
 if(type==='enum'){c=el('select',{id:id},[el('option',{value:''},['(default)'])].concat(f.choices.map(function(x){return el('option',{value:x},[x]);})));
  c.value=o[key]||'';c.addEventListener('change',function(){setKey(o,key,c.value||undefined);update();});}
 else if(type==='bool'){c=el('select',{id:id},[el('option',{value:''},['(default)']),el('option',{value:'true'},['true']),el('option',{value:'false'},['false'])]);
  c.value=o[key]===undefined?'':String(o[key]);c.addEventListener('change',function(){setKey(o,key,c.value===''?undefined:c.value==='true');update();});}
 else if(type==='metrics'){c=el('span',{id:id,role:'group','aria-label':key},f.choices.map(function(x){
   var b=el('input',{type:'checkbox',value:x,'data-field':path+'.'+x,checked:(o[key]||[]).indexOf(x)>=0});
   b.addEventListener('change',function(){var v=f.choices.filter(function(y){return c.querySelector('input[value="'+y+'"]').checked;});
    setKey(o,key,v.length?v:undefined);update();});return el('label',{'class':'check'},[b,x]);}));lab=el('span',{'class':'lab'},[key]);}
 else if(type==='method_names'||type==='model_names'){var names=type==='method_names'?state.methods.map(function(m){return m.name;}):
   state.models.map(function(m){return m.name;});names=names.filter(Boolean);
  c=el('span',{id:id,role:'group','aria-label':key},names.length?names.map(function(x){
   var b=el('input',{type:'checkbox',value:x,checked:(o[key]||[]).indexOf(x)>=0});
   b.addEventListener('change',function(){var v=names.filter(function(y){return c.querySelector('input[value="'+y+'"]').checked;});
    setKey(o,key,v.length?v:undefined);update();});return el('label',{'class':'check'},[b,x]);}):['(none yet)']);
  lab=el('span',{'class':'lab'},[key+' (none ticked: all)']);}
 else if(type==='params'){c=el('textarea',{id:id,rows:2,placeholder:'key=value, one a line'});
  c.value=Object.keys(o[key]||{}).map(function(k){return k+'='+show(o[key][k]);}).join('\n');
  c.addEventListener('input',function(){var p={};c.value.split('\n').forEach(function(l){l=l.trim();if(!l)return;var e=l.indexOf('=');
   if(e<0)p[l]='';else p[l.slice(0,e).trim()]=typed(l.slice(e+1));});setKey(o,key,Object.keys(p).length?p:undefined);update();});}
 else{c=el('input',{id:id,type:'text',spellcheck:'false'});c.value=show(o[key]);
  if(type==='names'||type==='devices'||type==='input_names'||type==='baselines')c.placeholder='separated by spaces';
  c.addEventListener('input',function(){var t=c.value;
   var v=/^(names|devices|input_names|baselines)$/.test(type)?words(t):
    /^(int|number|numbers|json)$/.test(type)?typed(t):(t===''?undefined:t);
   if(type==='json'&&t.trim()){try{v=JSON.parse(t);}catch(x){v=t;}}
   setKey(o,key,v);update();});}
 c.setAttribute('data-field',path);c.setAttribute('title',tip);c.setAttribute('aria-describedby',id+'-h');
 return el('div',{'class':'field'},[lab,c,el('small',{id:id+'-h'},[tip])]);}

/* every field of an object kind, but those given by name in `skip` */
function fields(obj,o,path,skip){return S.objects[obj].filter(function(k){return (skip||[]).indexOf(k)<0;})
 .map(function(k){return control(obj,k,o,fk(path,k));});}
function section(title,id,kids,note){return el('fieldset',{id:id},[el('legend',{},[title])].concat(note?[el('p',{'class':'note'},[note])]:[]).concat(kids));}
function button(text,fn,attrs){var b=el('button',Object.assign({type:'button'},attrs||{}),[text]);b.addEventListener('click',fn);return b;}

function methodBox(x,i){var name=x.method||x.name,fm;try{fm=findMethod(name);}catch(e){fm=null;}
 var m=fm&&fm.m,path='methods['+i+']',kids=[];
 kids.push(control('methods[]','name',x,path+'.name'));
 kids.push(el('p',{'class':'note'},[name+(fm&&fm.alias?' = '+fm.alias.method+' with '+fm.alias.params:'')+': '+
  (fm&&fm.alias?fm.alias.summary:m?m.summary:'')]));
 if(m&&m.layer)kids.push(control('methods[]','layer',x,path+'.layer'));
 var ps=m?m.params.slice():[];
 var base=x.params&&x.params.base?METHOD[x.params.base]:null;
 if(!base&&spec(m||{params:[]},'base'))base=METHOD[spec(m,'base')['default']];
 if(base&&base.wrappable)ps=ps.concat(base.params);
 var fixed=fm&&fm.alias&&fm.alias.params?fm.alias.params.split(',').map(function(t){return t.split('=')[0];}):[];
 var pk=[];ps.forEach(function(s){if(fixed.indexOf(s.key)>=0)return;x.params=x.params||{};
  var id='f'+(++uid),c,tip=s.help+' ('+s.kind+(s.lo!==undefined&&s.kind!=='string'?' in ['+g(s.lo)+', '+g(s.hi)+']':'')+', default '+(s['default']||'none')+')';
  if(s.kind==='choice'||s.kind==='bool'||s.kind==='method'){
   var opts=s.kind==='choice'?s.choices.split('|'):s.kind==='bool'?['true','false']:S.methods.filter(function(q){return q.wrappable;}).map(function(q){return q.name;});
   c=el('select',{id:id},[el('option',{value:''},['(default: '+s['default']+')'])].concat(opts.map(function(o){return el('option',{value:o},[o]);})));
   c.value=x.params[s.key]===undefined?'':String(x.params[s.key]);
   c.addEventListener('change',function(){x.params=x.params||{};setKey(x.params,s.key,c.value===''?undefined:s.kind==='bool'?c.value==='true':c.value);
    if(!Object.keys(x.params).length)delete x.params;if(s.kind==='method')render();else update();});}
  else{c=el('input',{id:id,type:'text',placeholder:s['default'],spellcheck:'false'});c.value=show(x.params[s.key]);
   c.addEventListener('input',function(){x.params=x.params||{};setKey(x.params,s.key,typed(c.value));if(!Object.keys(x.params).length)delete x.params;update();});}
  c.setAttribute('data-field',path+'.params.'+s.key);c.setAttribute('title',tip);c.setAttribute('aria-describedby',id+'-h');
  pk.push(el('div',{'class':'field'},[el('label',{'for':id},[s.key]),c,el('small',{id:id+'-h'},[tip])]));});
 if(x.params&&!Object.keys(x.params).length)delete x.params;
 if(pk.length)kids.push(el('div',{'class':'params'},pk));
 if(m&&(m.baseline||(base&&base.baseline)))kids.push(control('methods[]','baselines',x,path+'.baselines'));
 kids.push(el('details',{},[el('summary',{},['more: target, seed, patches, precision, time limit'])].concat(
  fields('methods[]',x,path,['name','method','params','layer','baselines']))));
 kids.push(button('remove '+x.name,function(){state.methods.splice(i,1);render();},{'class':'remove'}));
 return el('div',{'class':'item method','data-method':name,'data-index':i},kids);}

function uniqueLabel(n){var l=n,k=2;while(state.methods.some(function(m){return m.name===l;}))l=n+'_'+(k++);return l;}
function render(){root.textContent='';uid=0;
 var run=section('Run','run',fields('',state,'',['inputs','load','models','methods','randomisation','metrics','jobs','report']));
 var ins=section('Inputs','inputs',state.inputs.map(function(x,i){return el('div',{'class':'item'},
  fields('inputs[]',x,'inputs['+i+']').concat([state.inputs.length>1?button('remove',function(){state.inputs.splice(i,1);render();},{'class':'remove'}):null]));})
  .concat([button('add an input',function(){state.inputs.push({});render();},{id:'add-input'})]),
  'image: a NIfTI, PNG or NPY file (or a glob); mask: for the ground-truth metrics.');
 var load=section('Loading (esg-load)','load',fields('load',state.load,'load'));
 var models=section('Models','models',state.models.map(function(x,i){
  var w=el('input',{type:'checkbox',id:'wrap-'+i,checked:!!x.wrap});
  w.addEventListener('change',function(){if(w.checked)x.wrap={reduce:'fixed-mask'};else delete x.wrap;render();});
  return el('div',{'class':'item'},fields('models[]',x,'models['+i+']',['wrap']).concat([
   el('label',{'class':'check'},[w,'segmentation model: wrap it (esg-wrap) into per-class scores']),
   x.wrap?el('div',{'class':'sub'},fields('models[].wrap',x.wrap,'models['+i+'].wrap')):null,
   state.models.length>1?button('remove',function(){state.models.splice(i,1);render();},{'class':'remove'}):null]));})
  .concat([button('add a model',function(){state.models.push({});render();},{id:'add-model'})]));
 var pick=el('select',{id:'add-method','aria-label':'method to add'},S.methods.map(function(m){
  return el('option',{value:m.name,title:m.summary},[m.name+(m.layer?' (layer)':'')]);}).concat(
  S.aliases.map(function(a){return el('option',{value:a.name,title:a.summary},[a.name+' (= '+a.method+')']);})));
 var meths=section('Methods','methods',state.methods.map(methodBox).concat([el('div',{'class':'add'},[pick,
  button('add this method',function(){var n=pick.value;state.methods.push({name:uniqueLabel(n)});
   if(state.methods[state.methods.length-1].name!==n)state.methods[state.methods.length-1].method=n;render();},{id:'add-method-button'})])]),
  'Each method is a row of the report; add one twice with another name to compare parameters. Hover a parameter for its meaning.');
 var ru=el('input',{type:'checkbox',id:'use-random',checked:state.use_random});
 ru.addEventListener('change',function(){state.use_random=ru.checked;render();});
 var rand=section('Randomisation sanity check','randomisation',[el('label',{'class':'check'},[ru,'randomise the model\u2019s layers (esg-randomise) and compare the maps'])]
  .concat(state.use_random?fields('randomisation',state.randomisation,'randomisation'):[]));
 var mets=section('Metrics','metrics',fields('metrics',state.metrics,'metrics'));
 var jobs=section('Jobs','jobs',fields('jobs',state.jobs,'jobs'));
 var rr=el('input',{type:'checkbox',id:'use-report',checked:state.use_report});
 rr.addEventListener('change',function(){state.use_report=rr.checked;render();});
 var rep=section('Report','report',[el('label',{'class':'check'},[rr,'write the HTML report'])].concat(state.use_report?fields('report',state.report,'report'):[]));
 var fname=el('input',{type:'text',id:'file-name',value:state.file||'config.json',spellcheck:'false'});
 fname.addEventListener('input',function(){state.file=fname.value;update();});
 var outp=section('The config','result',[
  el('div',{'class':'field'},[el('label',{'for':'file-name'},['file name']),fname]),
  el('pre',{id:'json',tabindex:'0','aria-label':'the config as JSON'}),
  el('p',{},[button('copy',copy,{id:'copy'}),' ',el('a',{id:'download',download:'config.json',href:'#'},['download']),
   ' then: ',el('code',{id:'command'},[])])]);
 root.appendChild(el('p',{id:'status',role:'status','aria-live':'polite'}));
 [run,ins,load,models,meths,rand,mets,jobs,rep,outp].forEach(function(s){root.appendChild(s);});update();}

function config(){var c={};
 S.objects[''].forEach(function(k){
  if(k==='inputs'||k==='models'||k==='methods')c[k]=state[k];
  else if(k==='randomisation'){if(state.use_random)c[k]=state[k];}
  else if(k==='report'){if(!state.use_report)c[k]=false;else if(Object.keys(state[k]).length)c[k]=state[k];}
  else if(isObj(state[k])){if(Object.keys(state[k]).length)c[k]=state[k];}
  else if(state[k]!==undefined&&state[k]!=='')c[k]=state[k];});
 return c;}
function update(){var c=config(),text=JSON.stringify(c,null,2)+'\n',st=document.getElementById('status');
 var file=state.file||'config.json';
 document.getElementById('json').textContent=text;
 var a=document.getElementById('download');a.setAttribute('download',file.replace(/^.*\//,''));
 a.setAttribute('href','data:application/json;charset=utf-8,'+encodeURIComponent(text));
 document.getElementById('command').textContent='pipelines/run '+file;
 root.querySelectorAll('.invalid').forEach(function(e){e.classList.remove('invalid');e.removeAttribute('aria-invalid');});
 var msg=null;
 try{check(c);}catch(x){if(!(x instanceof Bad))throw x;msg=x;}
 root.dataset.message=msg?file+': '+msg.field+': '+msg.msg:'';
 if(!msg){st.className='ok';st.textContent='ok: esg-config would accept this config (it also checks that the files exist).';return;}
 st.className='bad';st.textContent=file+': '+msg.field+': '+msg.msg;
 var hit=root.querySelector('[data-field="'+msg.field.replace(/"/g,'\\"')+'"]');
 if(!hit)root.querySelectorAll('[data-field]').forEach(function(e){if(!hit&&(e.dataset.field.indexOf(msg.field+'.')===0||e.dataset.field.indexOf(msg.field+'[')===0))hit=e;});
 if(hit){hit.classList.add('invalid');hit.setAttribute('aria-invalid','true');}}
function copy(){var t=document.getElementById('json').textContent,b=document.getElementById('copy');
 function done(ok){b.textContent=ok?'copied':'select the text and copy it';setTimeout(function(){b.textContent='copy';},2000);}
 if(navigator.clipboard&&navigator.clipboard.writeText)navigator.clipboard.writeText(t).then(function(){done(true);},function(){done(false);});
 else{var r=document.createRange();r.selectNodeContents(document.getElementById('json'));var s=getSelection();s.removeAllRanges();s.addRange(r);
  done(document.execCommand&&document.execCommand('copy'));}}
/* for scripts (and tests): the check alone, on any config */
window.esgCheck=function(c){try{check(c);return null;}catch(x){if(x instanceof Bad)return x.field+': '+x.msg;throw x;}};
render();
document.body.dataset.ready='1';
})();
